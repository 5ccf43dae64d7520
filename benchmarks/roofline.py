"""Roofline model of the CUDA kernels: bytes moved and SASS instructions -> predicted time on an
H100 (3.35 TB/s) and an H200 (4.8 TB/s), beside the measured time when a GPU is present.

    python benchmarks/roofline.py [--static GPU_STATIC.json] [--measure] [--out FILE]

Per kernel and workload: bytes = every operand word read once and written once (the floor);
instructions = (SASS per item in the hot loop, from benchmarks/gpu_static.py --json) x items,
issued at 4 warp instructions per SM per clock (128 thread-instructions). Predicted time =
max(bytes / bandwidth, instructions / issue rate): a kernel above its memory floor is
instruction-bound, and the ratio says by how much. --measure times the same workloads with
CuPy events (needs a GPU and CuPy; the launch shapes are the backend's).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Card:
    """A GPU's roofline parameters."""

    name: str
    bandwidth: float  # bytes/s
    sms: int
    clock: float  # Hz, boost

    @property
    def issue(self) -> float:
        """Thread-instructions per second (4 schedulers x 32 lanes per SM per clock)."""
        return self.sms * 128 * self.clock


CARDS = (Card("H100 SXM", 3.35e12, 132, 1.98e9), Card("H200", 4.8e12, 132, 1.98e9))


@dataclass(frozen=True)
class Workload:
    """One kernel launch pattern: words moved and items in the hot loop."""

    kernel: str
    what: str
    bytes: float
    items: float
    extra_sass: float = 0.0  # instructions outside the hot loop that scale with the data


# The NTT's hot loops are its butterfly loops (radix-4 stage pairs, a radix-2 stage); each
# launch also moves every word global -> shared and back in two loops of about 14 SASS per word
# (measured on sm_90 for the radix-4 kernels): counted as this many butterfly-equivalents per
# word per pass (items are priced at the kernel's SASS per butterfly).
NTT_COPY_SASS_PER_WORD = 28.0


def workloads(rows: int = 64, n: int = 8192, k_sum: int = 16, lin: int = 8) -> list[Workload]:
    """The issue's reference shapes: B*L = `rows` limbs of N = `n` words."""
    w = 4.0 * rows * n  # bytes of one (B, L, N) uint32 operand
    log_n = n.bit_length() - 1
    passes = 2 if n > 2048 else 1  # launches over memory with TILE = 2048
    bfly = rows * (n // 2) * log_n
    copies = rows * n * passes * NTT_COPY_SASS_PER_WORD  # SASS, converted in predict()
    m = max(1, rows // lin)  # decryption: M ciphertext rows of `lin` limbs
    return [
        Workload(
            "_fwd_group", f"forward NTT {rows}x{n} ({passes} passes)", 2 * w * passes, bfly, copies
        ),  # fmt: skip
        Workload(
            "_inv_group", f"inverse NTT {rows}x{n} ({passes} passes)", 2 * w * passes, bfly, copies
        ),  # fmt: skip
        Workload("_add", f"add {rows}x{n}", 3 * w, rows * n),
        Workload("_sub", f"sub {rows}x{n}", 3 * w, rows * n),
        Workload("_neg", f"neg {rows}x{n}", 2 * w, rows * n),
        Workload("_mul_scalar", f"mul_scalar {rows}x{n}", 2 * w, rows * n),
        Workload("_mul", f"mul {rows}x{n}", 3 * w, rows * n),
        Workload("_mul_add", f"mul_add {rows}x{n}", 4 * w, rows * n),
        Workload("_sum_batch", f"sum of K={k_sum} x {rows}x{n}", (k_sum + 1) * w, k_sum * rows * n),
        Workload(
            "_base_convert",
            f"base_convert {lin}->{rows} limbs, N={n}",
            4.0 * n * (lin + rows),
            lin * rows * n,
        ),  # fmt: skip
        Workload(
            "_scale_round_to_t",
            f"scale_round_to_t {m}x{lin} limbs -> t, N={n}",
            4.0 * n * m * lin + 8.0 * n * m,
            m * lin * n,
        ),  # fmt: skip
    ]


def predict(wl: Workload, per_item: float, card: Card) -> tuple[float, float, float]:
    """(memory floor s, instruction time s, predicted s) of `wl` on `card`."""
    t_mem = wl.bytes / card.bandwidth
    t_ins = (per_item * wl.items + wl.extra_sass) / card.issue
    return t_mem, t_ins, max(t_mem, t_ins)


def load_static(path: Path | None) -> dict[str, float]:
    """kernel -> SASS per item on sm_90 (from gpu_static --json), compiling when no file."""
    if path is not None and path.exists():
        rows = json.loads(path.read_text())
    else:
        from benchmarks import gpu_static

        why = gpu_static.toolchain_missing()
        if why:
            raise SystemExit(f"roofline: no --static file and no toolchain ({why})")
        rows = [
            dict(per_item=s.per_item, name=s.name, cc=s.cc, error=s.error)
            for s in gpu_static.compile_all([90])
        ]
    return {r["name"]: float(r["per_item"]) for r in rows if r.get("cc", 90) == 90}


def measure(wls: list[Workload]) -> dict[str, float]:  # pragma: no cover - needs a GPU
    """Median seconds of each workload's kernel on the current GPU (CuPy events)."""
    import cupy
    import numpy as np

    import kernels.cuda as G
    from gpubfv.ring.modmath import generate_ntt_primes
    from kernels.cpu.arith import barrett_constants
    from kernels.ntt_tables import make_ntt_tables

    n, L, M = 8192, 16, 4  # B*L = 64
    qs = generate_ntt_primes([30] * L, n)
    tables = make_ntt_tables(qs, n)
    rng = np.random.default_rng(1)
    host = np.stack([rng.integers(0, q, (M, n)) for q in qs], axis=1).astype(np.uint32)
    a = cupy.asarray(host)
    b = cupy.asarray(host[:, :, ::-1].copy())
    out = cupy.empty_like(a)
    q = cupy.asarray(np.array(qs, dtype=np.uint32))
    mu = cupy.asarray(barrett_constants(qs))
    stack = cupy.asarray(np.stack([host] * 16))
    fns = {
        "_fwd_group": lambda: G.ntt_forward(a, tables),
        "_inv_group": lambda: G.ntt_inverse(a, tables),
        "_add": lambda: G.add(a, b, q, out),
        "_sub": lambda: G.sub(a, b, q, out),
        "_neg": lambda: G.neg(a, q, out),
        "_mul_scalar": lambda: G.mul_scalar(a, np.arange(1, L + 1), q, mu, out),
        "_mul": lambda: G.mul(a, b, q, mu, out),
        "_mul_add": lambda: G.mul_add(a, b, q, mu, out),
        "_sum_batch": lambda: G.sum_batch(stack, q, out),
    }
    res = {}
    for wl in wls:
        fn = fns.get(wl.kernel)
        if fn is None:
            continue
        fn()
        times = []
        for _ in range(5):
            t0, t1 = cupy.cuda.Event(), cupy.cuda.Event()
            t0.record()
            for _ in range(20):
                fn()
            t1.record()
            t1.synchronize()
            times.append(cupy.cuda.get_elapsed_time(t0, t1) / 20 / 1e3)
        res[wl.kernel] = sorted(times)[len(times) // 2]
    return res


def table(per_item: dict[str, float], measured: dict[str, float] | None = None) -> str:
    """Markdown: per workload and card, floor / instruction time / predicted / measured."""
    lines = [
        "| workload | SASS/item | MB moved | card | memory floor us | instr. us | predicted us "
        "| measured us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for wl in workloads():
        pi = per_item.get(wl.kernel, float("nan"))
        for card in CARDS:
            t_mem, t_ins, t = predict(wl, pi, card)
            m = measured.get(wl.kernel) if measured else None
            ms = f"{m * 1e6:.1f}" if m is not None else "not measured"
            lines.append(
                f"| {wl.what} | {pi:.1f} | {wl.bytes / 1e6:.1f} | {card.name} | "
                f"{t_mem * 1e6:.2f} | {t_ins * 1e6:.2f} | {t * 1e6:.2f} | {ms} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--static", type=Path, help="gpu_static --json output (else compile now)")
    ap.add_argument("--measure", action="store_true", help="time the workloads on this GPU")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    per_item = load_static(args.static)
    measured = measure(workloads()) if args.measure else None
    text = table(per_item, measured)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
