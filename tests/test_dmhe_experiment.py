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
    assert '"quick": true' in text  # the exact settings
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "traffic.png" in pngs and sum(p.startswith("accuracy_") for p in pngs) == 2
    assert all((out / p).stat().st_size > 5000 for p in pngs)
    results = json.loads((out / "results.json").read_text())
    for runs in results["runs"].values():
        modes = {(r["mode"], r["epsilon"]) for r in runs}
        for eps in results["settings"]["epsilons"]:
            assert {(m, eps) for m in ("dp", "dp-trusted-sum", "encrypted-dp")} <= modes
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
    assert (digits["dataset"], digits["model"], digits["peers"]) == ("digits", "logreg", 16)


def test_experiment_rejects_unknown_names():
    with pytest.raises(SystemExit):
        from dmhe.cli import build_parser

        build_parser().parse_args(["experiment", "nope"])
