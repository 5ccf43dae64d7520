"""Reports people can read: phases that add up, warm-up excluded, coinciding curves named,
one colour per mode, integer round ticks, traffic in MB per peer per round, set-up apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmhe.cli import main
from dmhe.report import (
    MODE_COLORS,
    PHASES,
    ReportError,
    coinciding_groups,
    color_for,
    load_run,
    write_report,
)


def _fake_run(root: Path, name: str, mode: str, peers: int, accs, *, contributors=None, retries=0):
    d = root / name
    d.mkdir(parents=True)
    info = {"config": {"mode": mode, "peers": peers, "dataset": "digits", "model": "mlp"}}
    info |= {"setup_seconds": 1.5, "setup_bytes_per_peer": 2e6, "setup_retries": 0}
    (d / "run.json").write_text(json.dumps(info))
    lines = []
    for i, a in enumerate(accs, start=1):
        t = {"train": 0.005, "quantize": 0.0025, "encrypt": 0.03, "communicate": 0.01}
        t |= {"decrypt": 0.02, "eval": 0.005, "round": 0.133 if i > 1 else 2.5}
        m = {"round": i, "mode": mode, "peers": peers, "accuracy": a, "loss": 1.0, "time": t}
        m |= {"bytes_sent_per_peer": 1.5e6 * peers / 4, "bytes_per_value": 15.0}
        m |= {"retries": retries if i == 2 else 0}
        if contributors is not None:
            m["contributors"] = contributors if i == 2 else list(range(peers))
        lines.append(json.dumps(m))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_phases_add_up_to_the_measured_round_time_without_the_warmup(tmp_path):
    run = load_run(_fake_run(tmp_path, "enc", "encrypted", 4, [0.5, 0.6, 0.7]))
    phases = run.phase_times()
    assert list(phases) == list(PHASES)
    assert sum(phases.values()) == pytest.approx(0.133)  # round 1's 2.5 s is the warm-up
    assert phases["other"] == pytest.approx(0.133 - 0.095)
    assert run.warmup_excluded


def test_coinciding_runs_are_grouped_and_named(tmp_path):
    a = _fake_run(tmp_path, "enc", "encrypted", 4, [0.5, 0.6])
    b = _fake_run(tmp_path, "pq", "plaintext-quantized", 4, [0.5, 0.6])
    c = _fake_run(tmp_path, "pt", "plaintext", 4, [0.5, 0.61])
    groups = coinciding_groups([load_run(p) for p in (a, b, c)])
    assert [[r.mode for r in g] for g in groups] == [
        ["encrypted", "plaintext-quantized"],
        ["plaintext"],
    ]
    md = write_report([a, b, c], tmp_path / "rep").read_text()
    assert "`encrypted` = `plaintext-quantized`: identical accuracy in every round" in md
    assert "round 1, the warm-up" in md
    assert "## Set-up" in md and "| 1.500 | 2.000 |" in md


def test_one_colour_per_mode():
    assert len(set(MODE_COLORS.values())) == len(MODE_COLORS)
    assert color_for("encrypted") == MODE_COLORS["encrypted"]
    assert color_for("some-new-mode") == color_for("some-new-mode")


def test_plots_integer_ticks_and_mode_colours(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(self, *a, **kw):
        figs.append(self)
        return real_savefig(self, *a, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    monkeypatch.setattr(plt, "close", lambda *a: None)
    runs = [
        _fake_run(tmp_path, "enc", "encrypted", 4, [0.5, 0.6, 0.7, 0.8, 0.81]),
        _fake_run(tmp_path, "dp", "dp", 4, [0.2, 0.3, 0.3, 0.35, 0.4]),
    ]
    write_report(runs, tmp_path / "rep")
    acc_ax = figs[0].axes[0]
    ticks = [t for t in acc_ax.get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    line_colours = {ln.get_label(): matplotlib.colors.to_hex(ln.get_color()) for ln in acc_ax.lines}
    assert line_colours["encrypted"] == MODE_COLORS["encrypted"]
    assert line_colours["dp"] == MODE_COLORS["dp"]
    bytes_ax = figs[2].axes[0]  # one K: bars in MB, coloured by mode
    heights = [p.get_height() for p in bytes_ax.patches]
    assert heights == pytest.approx([1.5, 1.5])
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in bytes_ax.patches] == [
        MODE_COLORS["encrypted"],
        MODE_COLORS["dp"],
    ]
    time_ax = figs[1].axes[0]
    tops = {}
    for p in time_ax.patches:
        x = round(p.get_x(), 3)
        tops[x] = max(tops.get(x, 0.0), p.get_y() + p.get_height())
    assert list(tops.values()) == pytest.approx([0.133, 0.133])  # stacked = measured


def test_traffic_over_several_k_is_a_line_and_peers_plot_appears(tmp_path):
    runs = [
        _fake_run(tmp_path, f"enc{k}", "encrypted", k, [0.5, 0.6], contributors=[0, 1, 2])
        for k in (4, 8)
    ]
    runs.append(_fake_run(tmp_path, "sa", "secagg", 4, [0.4, 0.5], retries=2))
    md = write_report(runs, tmp_path / "rep").read_text()
    assert "![peers](peers.png)" in md
    for png in ("accuracy", "time", "bytes", "peers"):
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 5000


def test_no_peers_plot_when_nothing_happened(tmp_path):
    d = _fake_run(tmp_path, "enc", "encrypted", 4, [0.5, 0.6], contributors=None)
    write_report([d], tmp_path / "rep")
    assert not (tmp_path / "rep" / "peers.png").exists()


def test_bad_run_folders(tmp_path, capsys):
    with pytest.raises(ReportError):
        write_report([tmp_path / "missing"], tmp_path / "rep")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.jsonl").write_text('{"round": 1}\n')
    with pytest.raises(ReportError, match="lacks"):
        load_run(tmp_path / "x")
    assert main(["report", str(tmp_path / "x"), "--out", str(tmp_path / "r")]) == 2
