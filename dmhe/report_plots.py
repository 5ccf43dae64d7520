"""The report's PNG plots (matplotlib, headless): accuracy per round, time per round by phase
with the set-up apart, traffic per peer per round, and contributors/retries per round.

Every plot colours a run by its mode (:func:`dmhe.report.color_for`), rounds are integers, and
runs whose accuracy series coincide share one legend entry that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dmhe.report import PHASES, Run, coinciding_groups, color_for, contributors_count

__all__ = ["plot_all"]

# phases in a sequential blue-grey-yellow scale (cividis), apart from the modes' colours
_PHASE_COLORS = {
    "train": "#00224e",
    "quantize": "#35456c",
    "encrypt": "#666970",
    "communicate": "#948e77",
    "decrypt": "#c8b866",
    "eval": "#fee838",
    "other": "#e6e6e6",
}


def _integer_rounds(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _several_k(runs: list[Run]) -> bool:
    return len({r.peers for r in runs}) > 1


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _marker(runs: list[Run], r: Run) -> str:
    """One marker per K (the colour is the mode's)."""
    ks = sorted({x.peers for x in runs})
    return _MARKERS[ks.index(r.peers) % len(_MARKERS)]


def plot_accuracy(runs: list[Run], path: Path) -> Path:
    """Accuracy per round; coinciding runs drawn once (their colours dashed on top)."""
    import matplotlib.pyplot as plt

    k = _several_k(runs)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for group in coinciding_groups(runs):
        first = group[0]
        xs = [m["round"] for m in first.rounds]
        ys = [m["accuracy"] for m in first.rounds]
        label = " = ".join(r.label(k) for r in group)
        if len(group) > 1:
            label += " (identical every round)"
        style = _marker(runs, first) + "-"
        ax.plot(xs, ys, style, color=color_for(first.mode), lw=2.5, ms=6, label=label)
        for i, r in enumerate(group[1:], start=1):  # the same points: dashes show each colour
            ax.plot(xs, ys, "--", color=color_for(r.mode), lw=2.5, dashes=(2 + i, 2 + i))
    ax.set(xlabel="round", ylabel="test accuracy", title="Test accuracy per round")
    _integer_rounds(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_time(runs: list[Run], path: Path) -> Path:
    """Stacked phases per round (they add up to the measured s/round), set-up beside it."""
    import matplotlib.pyplot as plt

    k = _several_k(runs)
    fig, (ax, ax_setup) = plt.subplots(
        1, 2, figsize=(max(8.0, 1.6 * len(runs) + 3), 4.8), gridspec_kw={"width_ratios": [3, 1.3]}
    )
    x = np.arange(len(runs))
    bottom = np.zeros(len(runs))
    for phase in PHASES:
        vals = np.array([r.phase_times()[phase] for r in runs])
        vals = np.nan_to_num(vals)
        ax.bar(x, vals, bottom=bottom, color=_PHASE_COLORS[phase], label=phase, width=0.6)
        bottom += vals
    for xi, r in zip(x, runs):
        ax.annotate(
            f"{r.round_time():.3f} s", (xi, r.round_time()), ha="center", va="bottom", fontsize=8
        )
    labels = [r.label(k) for r in runs]
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), runs):
        tick.set_color(color_for(r.mode))
    warm = any(r.warmup_excluded for r in runs)
    ax.set(
        ylabel="seconds per round (mean)",
        title="Time per round" + (" (round 1, the warm-up, excluded)" if warm else ""),
    )
    ax.set_ylim(0, max(bottom.max(), 1e-9) * 1.4)
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    setup = [float(r.info.get("setup_seconds", 0.0)) for r in runs]
    ax_setup.bar(x, setup, color=[color_for(r.mode) for r in runs], width=0.6)
    ax_setup.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax_setup.set(ylabel="seconds", title="Set-up (keys), once per run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_bytes(runs: list[Run], path: Path) -> Path:
    """MB sent per peer per round: bars for one K, one line per mode over several K."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if not _several_k(runs):
        x = np.arange(len(runs))
        mb = [r.mean("bytes_sent_per_peer") / 1e6 for r in runs]
        ax.bar(x, mb, color=[color_for(r.mode) for r in runs], width=0.6)
        for xi, v in zip(x, mb):
            ax.annotate(f"{v:.3g}", (xi, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [r.label() for r in runs], rotation=25, ha="right", fontsize=8)
        k = runs[0].peers if runs else "?"
        ax.set(ylabel="MB sent per peer per round", title=f"Traffic per peer per round (K={k})")
    else:
        by_mode: dict[str, list[tuple[int, float]]] = {}
        for r in runs:
            by_mode.setdefault(r.mode, []).append((r.peers, r.mean("bytes_sent_per_peer") / 1e6))
        ks = sorted({r.peers for r in runs})
        for mode, pts in by_mode.items():
            pts.sort()
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], "o-", color=color_for(mode), label=mode
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(v) for v in ks])
        ax.set(xlabel="peers K", ylabel="MB sent per peer per round", title="Traffic per peer vs K")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _eventful(r: Run) -> bool:
    for m in r.rounds:
        c = contributors_count(m)
        if (m.get("retries") or 0) > 0 or (c is not None and r.peers and c < r.peers):
            return True
    return False


def plot_peers(runs: list[Run], path: Path) -> Path | None:
    """Contributing peers and retries per round, for runs where a peer was ever lost."""
    import matplotlib.pyplot as plt

    shown = [r for r in runs if _eventful(r)]
    if not shown:
        return None
    k = _several_k(runs)
    fig, (ax_c, ax_r) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True)
    width = 0.8 / len(shown)
    for i, r in enumerate(shown):
        xs = [m["round"] for m in r.rounds]
        cs = [contributors_count(m) for m in r.rounds]
        style = _marker(runs, r) + "-"
        ax_c.plot(xs, cs, style, color=color_for(r.mode), label=r.label(k), lw=2, alpha=0.85)
        offs = np.array(xs) + (i - (len(shown) - 1) / 2) * width
        ax_r.bar(offs, [m.get("retries", 0) for m in r.rounds], width, color=color_for(r.mode))
    ax_c.set(ylabel="contributing peers", title="Peers per round")
    ax_c.legend(fontsize=8)
    ax_r.set(xlabel="round", ylabel="retries")
    for ax in (ax_c, ax_r):
        _integer_rounds(ax)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(runs: list[Run], out: Path) -> list[Path]:
    """Every plot that applies, written into ``out``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    paths = [
        plot_accuracy(runs, out / "accuracy.png"),
        plot_time(runs, out / "time.png"),
        plot_bytes(runs, out / "bytes.png"),
    ]
    peers = plot_peers(runs, out / "peers.png")
    return paths + ([peers] if peers is not None else [])
