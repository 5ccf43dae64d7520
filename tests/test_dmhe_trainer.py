"""Trainer rounds, modes agreeing exactly, checkpoint/resume, engine, CLI."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dmhe.cli import main
from dmhe.engine import SecureAggregationEngine
from dmhe.trainer import ConfigError, TrainConfig, Trainer, flatten_state
from dmhe.transport import run_peers

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smallcfg import small_fields  # noqa: E402

SMALL = small_fields(synthetic_size=(240, 60), local_steps=2, lr=0.1)


def _run(**kw) -> tuple[Trainer, list[dict]]:
    cfg = TrainConfig(**{**SMALL, **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the DP modes' PRNG warning
        tr = Trainer(cfg)
        return tr, tr.train()


@pytest.mark.parametrize("mode", ["plaintext", "plaintext-quantized"])
def test_two_rounds_k3(mode):
    tr, metrics = _run(mode=mode)
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert 0.0 <= m["accuracy"] <= 1.0
        assert set(m["time"]) >= {"train", "encrypt", "communicate", "decrypt"}
        assert m["bytes_sent_per_peer"] == pytest.approx(2 * 2 / 3 * 8 * tr.num_values, rel=1e-3)


def test_quantized_modes_bit_identical_and_float_close():
    q, _ = _run(mode="plaintext-quantized")
    s, _ = _run(mode="secagg")
    f, _ = _run(mode="plaintext")
    a, b = flatten_state(q.model), flatten_state(s.model)
    assert torch.equal(a, b)
    # Two rounds, each adding at most 2^-(f+1) per value to the float trajectory (plus float
    # rounding of the float run itself).
    assert (a - flatten_state(f.model)).abs().max().item() < 1e-3


def test_dp_mode_reports_epsilon():
    _, metrics = _run(mode="dp", dp_epsilon=4.0)
    assert metrics[-1]["dp_epsilon"] == pytest.approx(4.0, abs=0.01)
    assert metrics[0]["dp_epsilon"] < metrics[-1]["dp_epsilon"]


def test_non_iid_split_runs():
    _, metrics = _run(mode="plaintext-quantized", alpha=0.3, rounds=1)
    assert len(metrics) == 1


def test_dropout_round_is_retried():
    tr, metrics = _run(mode="plaintext-quantized", drop_prob=0.2, max_retries=100, rounds=2)
    assert len(metrics) == 2
    assert sum(m["retries"] for m in metrics) >= 1
    ref, _ = _run(mode="plaintext-quantized", rounds=2)
    assert torch.equal(flatten_state(tr.model), flatten_state(ref.model))


def test_resume_gives_identical_parameters(tmp_path):
    full, _ = _run(mode="plaintext-quantized", rounds=3, out_dir=str(tmp_path / "full"))

    cfg = TrainConfig(**{**SMALL, "mode": "plaintext-quantized", "rounds": 3})
    cfg.out_dir = str(tmp_path / "cut")
    Trainer(cfg).train(stop_after=2)  # "killed" after round 2
    # A line logged after the last checkpoint must be dropped on resume.
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"round": 3, "accuracy": -1}) + "\n")
    resumed = Trainer(cfg)
    rest = resumed.train(resume=True)
    assert [m["round"] for m in rest] == [3]
    assert torch.equal(flatten_state(full.model), flatten_state(resumed.model))
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3]
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    with pytest.raises(ConfigError, match="already holds"):
        Trainer(cfg).train()


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "nope"},
        {"peers": 0},
        {"mode": "secagg", "peers": 1},
        {"lr": -1.0},
        {"clip": 0.0},
        {"scale_bits": 60},
        {"threshold": 2, "mode": "plaintext-quantized"},
        {"mode": "dp", "dp_epsilon": 1.0, "dp_sigma": 1.0},  # at most one of the two
        {"mode": "plaintext", "dp_epsilon": 1.0},
        {"peers": 2**20, "scale_bits": 50},
        {"model": "no_such_model"},
        {"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"},
    ],
    ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()),
)
def test_bad_configs_refused(bad):
    with pytest.raises(ConfigError):
        Trainer(TrainConfig(**{**SMALL, **bad}))


def test_engine_secure_average_keeps_peers_identical():
    k = 3
    torch.manual_seed(0)
    data = [(torch.randn(16, 5), torch.randint(0, 2, (16,))) for _ in range(k)]

    def peer(t):
        torch.manual_seed(100 + t.rank)  # different initial weights: make_secure syncs them
        model = torch.nn.Linear(5, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        engine = SecureAggregationEngine(mode="secagg", peers=k, clip=1.0, scale_bits=20)
        model, opt, loader = engine.make_secure(
            module=model, optimizer=opt, data_loader=[data[t.rank]], transport=t
        )
        for _ in range(3):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        return flatten_state(model)

    outs = run_peers(k, peer)
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_engine_validates_up_front():
    with pytest.raises(ConfigError):
        SecureAggregationEngine(mode="nope", peers=3)
    with pytest.raises(ConfigError):
        SecureAggregationEngine(mode="secagg", peers=1)
    engine = SecureAggregationEngine(mode="plaintext", peers=2)
    model = torch.nn.Linear(2, 2)
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="not in the module"):
        run_peers(
            2,
            lambda t: engine.make_secure(
                module=model, optimizer=other, data_loader=[], transport=t
            ),
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--bogus"],
        ["train", "--peers", "0"],
        ["train", "--lr", "-1"],
        ["train", "--mode", "dp", "--dp-delta", "2"],
        ["train", "--mode", "secagg", "--peers", "1"],
        ["train", "--resume"],
        ["train", "--dataset", "mnist"],
        ["report", "/nonexistent", "--out", "/tmp/x"],
        [],
    ],
    ids=lambda a: " ".join(a) or "empty",
)
def test_cli_exit_code_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_cli_train_and_report(tmp_path, capsys):
    common = ["--dataset", "synthetic", "--synthetic-shape", "1x8x8", "--synthetic-size", "120,40"]
    common += ["--peers", "3", "--rounds", "2", "--no-progress"]
    for mode in ("plaintext", "secagg"):
        assert main(["train", *common, "--mode", mode, "-o", str(tmp_path / mode)]) == 0
    assert main(["report", str(tmp_path / "plaintext"), str(tmp_path / "secagg"),
                 "--out", str(tmp_path / "rep")]) == 0  # fmt: skip
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "secagg" in md and "plaintext" in md
    for png in ("accuracy.png", "time.png", "bytes.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    info = json.loads((tmp_path / "secagg" / "run.json").read_text())
    assert info["setup_bytes_per_peer"] == 64  # two X25519 keys out
    assert np.isfinite(info["num_values"])
