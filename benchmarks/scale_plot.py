"""The plot of ``bench_scale.py``: round time vs K, one panel per workload (plain, encrypted),
colour per topology, line style per link profile."""

from __future__ import annotations

from pathlib import Path

#: one colour per topology, one line style per link profile (the plot's two legends)
COLORS = {
    "ring": "tab:grey",
    "halving": "tab:blue",
    "halving-batched": "tab:cyan",
    "bruck": "tab:red",
    "bruck-batched": "tab:orange",
}
STYLES = {"datacenter": ":", "regional": "--", "internet": "-"}
#: batched and unbatched variants share the network model, so their lines overlap: markers tell
MARKERS = {"ring": "o", "halving": "s", "halving-batched": "D", "bruck": "^", "bruck-batched": "v"}


def make_plot(plot, path: Path) -> None:
    """Write the round-time plot of ``plot`` ({(workload, topology, link): [(K, s)]})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = ["plain", "encrypted-slices"]
    titles = {
        "plain": "plain uint32 sums: simulated where K threads ran, else modeled",
        "encrypted-slices": "encrypted round (coefficient slices), network time only (modeled)",
    }
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    for ax, panel in zip(axes, panels):
        for (wl, name, link), pts in sorted(plot.items()):
            if wl != panel or (panel != "plain" and name.endswith("-batched")):
                continue  # net only: a batched line lies on its unbatched one (+4 B/chunk)
            ks, ts = zip(*pts)
            ax.plot(
                ks,
                ts,
                STYLES[link],
                color=COLORS[name],
                marker=MARKERS[name],
                ms=4,
                lw=1.3,
                alpha=0.85,
            )
        ax.axhline(5.0, color="black", lw=0.8, alpha=0.5)
        ax.text(3.6, 5.6, "5 s target (K = 1000, internet)", fontsize=8, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peers K")
        ax.set_title(titles[panel], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("simulated round time (s)")
    topo_h = [
        Line2D([], [], color=c, lw=2.5, marker=MARKERS[n], label=n) for n, c in COLORS.items()
    ]
    link_h = [Line2D([], [], color="black", ls=ls, label=n) for n, ls in STYLES.items()]
    fig.legend(
        handles=topo_h,
        title="topology (colour)",
        loc="lower left",
        ncol=len(topo_h),
        bbox_to_anchor=(0.06, 0.03),
        frameon=False,
    )
    fig.legend(
        handles=link_h,
        title="link (line style)",
        loc="lower right",
        ncol=3,
        bbox_to_anchor=(0.98, 0.03),
        frameon=False,
    )
    fig.suptitle("dmhe aggregation round time vs K, 2^20 16-bit values per peer")
    fig.text(
        0.5,
        0.005,
        "K = 1000 and 1024 are both plotted: halving's jump at 1000 is its fold-in (488 extra "
        "peers, twice the bytes for their partners); at 1024 it is a power of two",
        ha="center",
        fontsize=8,
        alpha=0.8,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")
