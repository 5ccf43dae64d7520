"""Turn run folders (``run.json`` + ``metrics.jsonl``) into a markdown table and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PHASES", "ReportError", "Run", "load_run", "write_report"]

PHASES = ("train", "encrypt", "communicate", "decrypt")


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
    def label(self) -> str:
        """A short legend label: mode, K and folder name."""
        c = self.config
        return f"{c.get('mode', '?')} K={c.get('peers', '?')} ({self.path.name})"

    def mean(self, key: str) -> float:
        """Mean of a per-round metric (NaN without rounds)."""
        return float(np.mean([r[key] for r in self.rounds])) if self.rounds else float("nan")

    def mean_time(self, phase: str) -> float:
        """Mean seconds of one round phase (NaN without rounds)."""
        if not self.rounds:
            return float("nan")
        return float(np.mean([r["time"].get(phase, 0.0) for r in self.rounds]))


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
    return Run(path, info, rounds)


def _table(runs: list[Run]) -> str:
    head = (
        "| run | mode | K | dataset/model | rounds | final acc | s/round | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | bytes/peer/round | B/value | ε |"
    )
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = [head, sep]
    for r in runs:
        c, last = r.config, (r.rounds[-1] if r.rounds else {})
        eps = last.get("dp_epsilon")
        rows.append(
            f"| {r.path.name} | {c.get('mode', '?')} | {c.get('peers', '?')} "
            f"| {c.get('dataset', '?')}/{c.get('model', '?')} | {len(r.rounds)} "
            f"| {last.get('accuracy', float('nan')):.4f} | {r.mean_time('round'):.3f} | "
            + " | ".join(f"{r.mean_time(p):.3f}" for p in PHASES)
            + f" | {r.mean('bytes_sent_per_peer'):,.0f} | {r.mean('bytes_per_value'):.2f} "
            f"| {'—' if eps is None else f'{eps:.2f}'} |"
        )
    return "\n".join(rows) + "\n"


def write_report(run_dirs: list[Path], out: Path) -> Path:
    """Write ``report.md``, ``accuracy.png``, ``time.png`` and ``bytes.png`` into ``out``."""
    runs = []
    for d in run_dirs:
        if not d.is_dir():
            raise ReportError(f"{d}: not a folder")
        runs.append(load_run(d))
    out.mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        ax.plot(
            [m["round"] for m in r.rounds], [m["accuracy"] for m in r.rounds], "o-", label=r.label
        )
    ax.set(xlabel="round", ylabel="test accuracy", title="Accuracy per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(runs)), 4.5))
    x = np.arange(len(runs))
    bottom = np.zeros(len(runs))
    for phase in PHASES:
        vals = np.array([r.mean_time(phase) for r in runs])
        ax.bar(x, vals, bottom=bottom, label=phase)
        bottom += vals
    ax.set_xticks(x, [r.label for r in runs], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="seconds per round (mean)", title="Time per round by phase")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "time.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_mode: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        by_mode.setdefault(r.config.get("mode", "?"), []).append(
            (int(r.config.get("peers", 0)), r.mean("bytes_sent_per_peer"))
        )
    for mode, pts in sorted(by_mode.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=mode)
    ax.set(xlabel="peers K", ylabel="bytes sent per peer per round", title="Traffic per peer vs K")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bytes.png", dpi=120)
    plt.close(fig)

    md = out / "report.md"
    md.write_text(
        "# dmhe runs\n\n"
        + _table(runs)
        + "\nTimes are means over rounds; in-process runs simulate K peers on shared cores, so "
        "per-phase times are per-peer means measured under contention.\n\n"
        "![accuracy](accuracy.png)\n\n![time](time.png)\n\n![bytes](bytes.png)\n"
    )
    return md
