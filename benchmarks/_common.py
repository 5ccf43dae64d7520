"""Shared benchmark helpers: machine description, timing, and the sectioned RESULTS.md writer.

Each benchmark owns one section of `benchmarks/RESULTS.md`, delimited by
`<!-- NAME:start -->` / `<!-- NAME:end -->`, and replaces only that section.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def version(dist: str) -> str:
    """Installed version of distribution `dist`, or "absent"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_lines(extra_versions: tuple[str, ...] = ()) -> list[str]:
    """Self-describing header lines of a RESULTS.md section (machine, versions)."""
    import numba

    vers = [f"python {platform.python_version()}"]
    vers += [f"{d} {version(d)}" for d in ("numpy", "numba", *extra_versions)]
    return [
        f"- machine: {cpu_model()}, {cpu_count()} cores usable, "
        f"numba threads {numba.get_num_threads()}, {platform.system()} {platform.release()}",
        f"- versions: {', '.join(vers)}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; command: `python {' '.join(sys.argv)}`",
    ]


def load_average() -> float:
    """The 1-minute load average (NaN where the OS does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def wait_for_idle(max_s: float, threshold: float = 0.5, poll_s: float = 5.0) -> float:
    """Wait (at most max_s) until the 1-minute load average is below threshold; return it.

    Numba's parallel kernels suffer badly when another process holds a core (a thread of
    every prange waits for the descheduled one), so timings on a busy machine mislead.
    """
    deadline = time.monotonic() + max_s
    while load_average() >= threshold and time.monotonic() < deadline:
        time.sleep(poll_s)
    return load_average()


STAT = {"name": "median"}  # "median" (default) or "min" (best run: robust on a shared machine)


def median_time(fn: Callable[[], object], reps: int, warmup: int = 1, min_s: float = 0.0) -> float:
    """Median (or, with STAT["name"] == "min", best) wall-clock seconds of fn() over `reps`
    runs, with more runs until `min_s` is spent."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < reps or time.perf_counter() - t_start < min_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 20 * max(reps, 1):
            break
    return min(times) if STAT["name"] == "min" else statistics.median(times)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A fixed-width text table for the terminal."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end -->."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _m: block, old)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    if not new.endswith("\n"):
        new += "\n"
    path.write_text(new)
