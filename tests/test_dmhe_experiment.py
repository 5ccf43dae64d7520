"""``dmhe experiment paper --quick`` end to end: tables, plots and settings are written."""

from __future__ import annotations

import json

import pytest

from dmhe.cli import main
from dmhe.experiment import PaperSettings, measure_traffic


def test_paper_quick_writes_the_report(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["experiment", "paper", "--quick", "--out", str(out)]) == 0
    text = (out / "paper.md").read_text()
    assert "DDP - central (pp)" in text and "communication per peer" in text.lower()
    assert "DP-SGD (record)" in text
    assert '"quick": true' in text  # the exact settings
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "traffic.png" in pngs and sum(p.startswith("accuracy_") for p in pngs) == 2
    assert all((out / p).stat().st_size > 5000 for p in pngs)
    results = json.loads((out / "results.json").read_text())
    for runs in results["runs"].values():
        modes = {(r["mode"], r["epsilon"]) for r in runs}
        for eps in results["settings"]["epsilons"]:
            want = ("dp", "dp-trusted-sum", "encrypted-dp", "dp-sgd")
            assert {(m, eps) for m in want} <= modes
        for r in runs:
            assert len(r["accuracy"]) == results["settings"]["rounds"]
            if r["epsilon"] is not None:
                assert r["dp_epsilon"] <= r["epsilon"] * 1.001
    ks = {(r["aggregator"], r["peers"]) for r in results["traffic"]}
    assert ("secagg", 8) in ks and ("encrypted", 4) in ks


def test_traffic_grows_with_k_for_pairwise_masking_only():
    enc = [measure_traffic("encrypted", k, 4096)["bytes_per_value"] for k in (4, 8)]
    plain = [measure_traffic("plaintext", k, 4096)["bytes_per_value"] for k in (4, 8)]
    assert enc[1] < enc[0] * 1.5 and plain[1] < plain[0] * 1.5
    full = PaperSettings.for_run(quick=False, data_dir=None)
    assert full.traffic_peers == (4, 16, 64)
    digits = full.datasets[0]
    assert (digits["dataset"], digits["model"], digits["peers"]) == ("digits", "logreg", 64)


def test_experiment_rejects_unknown_names():
    with pytest.raises(SystemExit):
        from dmhe.cli import build_parser

        build_parser().parse_args(["experiment", "nope"])


def test_a_diverged_run_is_a_result_not_a_crash(monkeypatch, tmp_path):
    """A run whose update turns NaN (local DP noise at small eps on a CNN did, in the full
    settings) is kept with the rounds it finished, NaN after, and named in the report."""
    import math

    from dmhe import experiment
    from dmhe.config import UpdateRefused
    from dmhe.experiment_report import _acc, _pp, _split, _tail
    from dmhe.trainer import Trainer

    def fake_train(self, *a, **k):
        self.log({"accuracy": 0.5, "time": {"round": 1.0}, "bytes_sent_per_peer": 8})
        raise UpdateRefused("round 2, peer 0: update has 3 NaN/inf values")

    monkeypatch.setattr(Trainer, "train", fake_train)
    settings = PaperSettings.for_run(quick=True, data_dir=None)
    run = experiment._train(settings, settings.datasets[0], "dp", 4.0)
    assert run["accuracy"][0] == 0.5 and all(math.isnan(a) for a in run["accuracy"][1:])
    assert len(run["accuracy"]) == settings.rounds and "round 2" in run["diverged"]
    assert _acc(math.nan) == "diverged" and _pp(math.nan) == "-" and _acc(0.25) == "0.2500"
    assert _split([], 3)["round"] == 0.0  # refused in round 1: nothing measured, no crash
    assert _tail([0.1, 0.2, 0.3, 0.7]) == pytest.approx(0.4) and _tail([0.5], 3) == 0.5
    assert math.isnan(_tail([0.1, math.nan, 0.3])) and math.isnan(_tail([]))
