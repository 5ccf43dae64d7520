"""Turn run folders (``run.json`` + ``metrics.jsonl``) into ``report.md`` and PNG plots.

What the numbers mean: a round's time is split into the phases the trainer measures (train,
quantize, encrypt, communicate, decrypt, eval) plus ``other``, the rest of the measured wall
time of the round, so the stacked phases add up to the measured seconds per round. Round 1 pays
one-off costs (JIT compilation, caches): it is left out of the means when a run has more
rounds, and flagged. The set-up (key generation) is reported apart, once per run. Traffic is
MB sent per peer per round. Runs whose accuracy series are equal in every round are drawn once
and named together ("encrypted = plaintext-quantized").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODE_COLORS",
    "PHASES",
    "ReportError",
    "Run",
    "color_for",
    "coinciding_groups",
    "load_run",
    "write_report",
]

#: the stacked phases of a round; ``other`` is the measured round time minus the rest
PHASES = ("train", "quantize", "encrypt", "communicate", "decrypt", "eval", "other")

# phases the trainer reports as a per-peer mean although the local peers run them in turn
_PER_PEER_SEQUENTIAL = ("train", "quantize")

#: one colour per mode, the same in every plot
MODE_COLORS = {
    "plaintext": "#4c72b0",
    "plaintext-quantized": "#55a868",
    "secagg": "#8172b2",
    "dp": "#c44e52",
    "encrypted": "#dd8452",
    "encrypted-dp": "#937860",
}
_SPARE_COLORS = ("#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd", "#1f77b4", "#2ca02c")


def color_for(mode: str) -> str:
    """The mode's colour (a stable spare colour for modes not in :data:`MODE_COLORS`)."""
    if mode in MODE_COLORS:
        return MODE_COLORS[mode]
    return _SPARE_COLORS[sum(map(ord, mode)) % len(_SPARE_COLORS)]


class ReportError(ValueError):
    """A run folder is missing or unreadable."""


@dataclass
class Run:
    """One run folder: its run.json and its per-round metrics."""

    path: Path
    info: dict[str, Any]
    rounds: list[dict[str, Any]]

    @property
    def config(self) -> dict[str, Any]:
        """The run's training configuration (from run.json)."""
        return self.info.get("config", {})

    @property
    def mode(self) -> str:
        """The run's mode (``?`` when run.json lacks it)."""
        return str(self.config.get("mode", "?"))

    @property
    def peers(self) -> int:
        """K (0 when unknown)."""
        return int(self.config.get("peers", 0) or 0)

    @property
    def local_peers(self) -> int:
        """Peers that ran in this run's process: K in-process (their local work runs one
        after the other, so its wall time is K times the per-peer mean), 1 under torchrun."""
        if self.info.get("local_peers"):
            return int(self.info["local_peers"])
        return 1 if self.config.get("transport") == "torch" else max(self.peers, 1)

    def label(self, with_k: bool = False) -> str:
        """A legend label: the mode, and K when runs with several K are compared."""
        return f"{self.mode} K={self.peers}" if with_k else self.mode

    @property
    def timed(self) -> list[dict[str, Any]]:
        """The rounds the time means use: all but round 1 (warm-up) when there are more."""
        return self.rounds[1:] if len(self.rounds) > 1 else self.rounds

    @property
    def warmup_excluded(self) -> bool:
        """Whether round 1 is left out of the time means."""
        return len(self.rounds) > 1

    def mean(self, key: str) -> float:
        """Mean of a per-round metric over the timed rounds (NaN without rounds)."""
        vals = [r[key] for r in self.timed if key in r]
        return float(np.mean(vals)) if vals else float("nan")

    def phase_times(self) -> dict[str, float]:
        """Mean seconds per phase over the timed rounds; they add up to :meth:`round_time`."""
        if not self.rounds:
            return {p: float("nan") for p in PHASES}
        out = {}
        for p in PHASES[:-1]:
            out[p] = float(np.mean([r["time"].get(p, 0.0) for r in self.timed]))
            if p in _PER_PEER_SEQUENTIAL:
                out[p] *= self.local_peers
        measured = self.round_time()
        out["other"] = max(measured - sum(out.values()), 0.0)
        return out

    def round_time(self) -> float:
        """Mean measured seconds per round over the timed rounds."""
        if not self.rounds:
            return float("nan")
        return float(np.mean([r["time"]["round"] for r in self.timed]))

    def accuracy_series(self) -> tuple[tuple[int, float], ...]:
        """``(round, accuracy)`` of every round."""
        return tuple((int(r["round"]), float(r["accuracy"])) for r in self.rounds)


def load_run(path: Path) -> Run:
    """Read a run folder; ``ReportError`` if it is not one."""
    info_path, metrics_path = path / "run.json", path / "metrics.jsonl"
    if not metrics_path.exists():
        raise ReportError(f"{path}: no metrics.jsonl (not a dmhe run folder?)")
    try:
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        rounds = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: unreadable run: {exc}") from exc
    for r in rounds:
        if not {"round", "accuracy", "time"} <= set(r):
            raise ReportError(f"{path}: a metrics line lacks round/accuracy/time")
    return Run(path, info, rounds)


def coinciding_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by equal accuracy series (same K, same value in every round), in order."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.peers, r.accuracy_series()), []).append(r)
    return list(groups.values())


def contributors_count(m: dict[str, Any]) -> int | None:
    """A round's number of contributing peers (``contributors`` is a count or a rank list)."""
    c = m.get("contributors")
    if isinstance(c, list):
        return len(c)
    return int(c) if isinstance(c, (int, float)) else None


def _fmt(x: float, spec: str) -> str:
    return "—" if x != x else format(x, spec)  # NaN check without numpy


def _tables(runs: list[Run]) -> str:
    several_k = len({r.peers for r in runs}) > 1
    head = (
        "| run | mode | K | dataset/model | rounds | final acc | s/round | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | MB/peer/round | B/value | ε |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        c, last = r.config, (r.rounds[-1] if r.rounds else {})
        eps = last.get("dp_epsilon")
        phases = r.phase_times()
        rows.append(
            f"| {r.path.name} | {r.mode} | {r.peers or '?'} "
            f"| {c.get('dataset', '?')}/{c.get('model', '?')} | {len(r.rounds)} "
            f"| {_fmt(last.get('accuracy', float('nan')), '.4f')} "
            f"| {_fmt(r.round_time(), '.3f')} | "
            + " | ".join(_fmt(phases[p], ".3f") for p in PHASES)
            + f" | {_fmt(r.mean('bytes_sent_per_peer') / 1e6, '.3f')} "
            f"| {_fmt(r.mean('bytes_per_value'), '.2f')} "
            f"| {'—' if eps is None else f'{eps:.2f}'} |"
        )
    setup = [
        "| run | mode | K | set-up s | set-up MB/peer | set-up retries |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        i = r.info
        setup.append(
            f"| {r.path.name} | {r.mode} | {r.peers or '?'} "
            f"| {_fmt(float(i.get('setup_seconds', float('nan'))), '.3f')} "
            f"| {_fmt(float(i.get('setup_bytes_per_peer', float('nan'))) / 1e6, '.3f')} "
            f"| {i.get('setup_retries', '—')} |"
        )
    notes = []
    if any(r.warmup_excluded for r in runs):
        notes.append(
            "Times are means over rounds 2.. (round 1, the warm-up with JIT compilation and "
            "caches, is excluded); `other` is the measured round time minus the listed phases, "
            "so the phases add up to s/round. In-process runs train and quantize the K peers "
            "one after another: those two columns are the wall time of all K."
        )
    for g in coinciding_groups(runs):
        if len(g) > 1:
            notes.append(
                " = ".join(f"`{r.label(several_k)}`" for r in g)
                + ": identical accuracy in every round (exact aggregation)."
            )
    notes.append(
        "In-process runs simulate the K peers on shared cores: encrypt, communicate and decrypt "
        "are per-peer means of peers running concurrently, measured under that contention."
    )
    return (
        "\n".join(rows)
        + "\n\n## Set-up (once per run, not in the per-round figures)\n\n"
        + "\n".join(setup)
        + "\n\n"
        + "\n\n".join(notes)
        + "\n"
    )


def write_report(run_dirs: list[Path], out: Path) -> Path:
    """Write ``report.md`` and the plots (``accuracy.png``, ``time.png``, ``bytes.png``, and
    ``peers.png`` when the metrics carry contributors/retries) into ``out``."""
    runs = []
    for d in run_dirs:
        if not d.is_dir():
            raise ReportError(f"{d}: not a folder")
        runs.append(load_run(d))
    out.mkdir(parents=True, exist_ok=True)
    from dmhe.report_plots import plot_all

    pngs = plot_all(runs, out)
    md = out / "report.md"
    md.write_text(
        "# dmhe runs\n\n"
        + _tables(runs)
        + "\n"
        + "".join(f"![{p.stem}]({p.name})\n\n" for p in pngs)
    )
    return md
