"""Peers as processes: the settings handshake, the transport choice under torchrun, and run
directories shared by the processes of one run (gloo on 127.0.0.1).

The multi-process tests start each rank as ``python -m dmhe train`` with the variables torchrun
would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so that one rank can be given
other flags, which one torchrun command cannot do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dmhe.cli import main
from dmhe.config import ConfigError, TrainConfig
from dmhe.handshake import HandshakeError, agree, describe_differences, settings_digest
from dmhe.launch import (
    TorchrunEnv,
    choose_transport,
    peers_under_torchrun,
    torchrun_command,
    torchrun_env,
)
from dmhe.rundir import METRICS, RUN_INFO, RunDir
from dmhe.state import flatten_state
from dmhe.trainer import Trainer
from dmhe.transport import run_peers

COMMON = ["--dataset", "synthetic", "--synthetic-shape", "1x8x8", "--synthetic-size", "120,40"]
COMMON += ["--rounds", "2", "--no-progress"]
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(per_rank: list[list[str]], timeout: float = 300.0) -> list[tuple[int, str, float]]:
    """Start one ``dmhe train`` process per entry (its extra flags); ``(rc, stderr, seconds
    until it ended)`` per rank."""
    k, port = len(per_rank), _free_port()
    procs = []
    t0 = time.monotonic()
    for rank, extra in enumerate(per_rank):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(k), "LOCAL_RANK": str(rank)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.getcwd()
        argv = [sys.executable, "-m", "dmhe", "train", *COMMON, *extra]
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )
    ended: dict[int, float] = {}
    while len(ended) < k and time.monotonic() - t0 < timeout:
        for r, p in enumerate(procs):
            if r not in ended and p.poll() is not None:
                ended[r] = time.monotonic() - t0
        time.sleep(0.02)
    out = []
    for r, p in enumerate(procs):
        if r not in ended:
            p.kill()
        _, err = p.communicate()
        out.append((p.returncode, err, ended.get(r, float("inf"))))
    return out


# --------------------------------------------------------------------------- handshake (unit)


def _settings(**over) -> dict:
    return {"lr": 0.1, "rounds": 2, "mode": "plaintext-quantized", **over}


def test_in_process_handshake_every_peer_names_the_difference():
    def peer(t):
        s = _settings(lr=0.3) if t.rank == 2 else _settings()
        try:
            agree(t, s)
        except HandshakeError as exc:
            return str(exc)
        return "agreed"

    msgs = run_peers(4, peer)
    assert len(set(msgs)) == 1
    assert "lr: ranks 0,1,3 = 0.1; rank 2 = 0.3" in msgs[0]
    assert "rounds" not in msgs[0]
    assert run_peers(3, lambda t: agree(t, _settings())) == [settings_digest(_settings())] * 3


def test_in_process_handshake_reports_a_peer_that_could_not_start():
    def peer(t):
        try:
            agree(t, _settings(), error="disk full" if t.rank == 1 else None)
        except HandshakeError as exc:
            return str(exc)

    assert run_peers(3, peer) == ["not every peer could start: rank 1: disk full"] * 3


def test_describe_differences_lists_each_setting_once():
    groups = [
        {"ranks": [0, 2], "settings": _settings()},
        {"ranks": [1], "settings": _settings(rounds=3, mode="secagg")},
    ]
    assert describe_differences(groups) == [
        'mode: ranks 0,2 = "plaintext-quantized"; rank 1 = "secagg"',
        "rounds: ranks 0,2 = 2; rank 1 = 3",
    ]
    assert describe_differences(groups[:1]) == []


def test_in_process_trainer_runs_the_handshake():
    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 8, 8), synthetic_size=(60, 20))
    cfg.peers, cfg.rounds, cfg.mode = 3, 1, "plaintext-quantized"  # no keys to set up
    tr = Trainer(cfg)
    tr.setup()
    assert all(t.total_bytes_sent > 0 for t in tr.transports)  # the handshake's messages
    assert tr.setup_info["setup_bytes_per_peer"] == 0  # ... are not counted as key set-up


# --------------------------------------------------------------------------- launch (unit)


def test_torchrun_env_and_transport_choice():
    assert torchrun_env({}) is None
    assert torchrun_env({"RANK": "1"}) is None
    # a plain env:// launch (MASTER_ADDR/PORT, RANK, WORLD_SIZE): LOCAL_RANK defaults to RANK
    assert torchrun_env({"RANK": "1", "WORLD_SIZE": "3"}) == TorchrunEnv(1, 3, 1)
    env = torchrun_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})
    assert env == TorchrunEnv(1, 3, 1)
    assert choose_transport("auto", env, argv=[], peers=3) == "torch"
    assert choose_transport("auto", None, argv=[], peers=3) == "inprocess"
    with pytest.raises(ConfigError, match="under torchrun"):
        choose_transport("inprocess", env, argv=[], peers=3)
    with pytest.raises(ConfigError, match="torchrun --standalone"):
        choose_transport("torch", None, argv=["train"], peers=3)
    assert peers_under_torchrun(env, None) == 3
    with pytest.raises(ConfigError, match="WORLD_SIZE=3"):
        peers_under_torchrun(env, 4)
    cmd = torchrun_command(["train", "--lr", "0.1", "-o", "my runs"], 4)
    assert cmd == "torchrun --standalone --nproc_per_node 4 -m dmhe train --lr 0.1 -o 'my runs'"


def test_cli_transport_torch_outside_torchrun_shows_the_command(monkeypatch, capsys):
    for v in TORCHRUN_VARS:
        monkeypatch.delenv(v, raising=False)
    argv = ["train", *COMMON, "--peers", "3", "--transport", "torch"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "torchrun --standalone --nproc_per_node 3 -m dmhe train --dataset synthetic" in err


@pytest.mark.parametrize(
    "extra, message",
    [(["--transport", "inprocess"], "under torchrun"), (["--peers", "3"], "WORLD_SIZE=1")],
    ids=["inprocess", "peers"],
)
def test_cli_under_torchrun_refuses(monkeypatch, capsys, extra, message):
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    for k, v in {**env, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    assert main(["train", *COMMON, "--mode", "plaintext", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not torch.distributed.is_initialized()


# --------------------------------------------------------------------------- processes


@pytest.mark.parametrize(
    "odd",
    [
        ["--lr", "0.3"],
        pytest.param(["--rounds", "3"], marks=pytest.mark.slow),
        pytest.param(["--mode", "secagg"], marks=pytest.mark.slow),
    ],
    ids=lambda a: "".join(a),
)
def test_one_rank_with_other_settings_stops_every_rank(odd):
    k = 3
    results = _launch([[]] * (k - 1) + [odd])
    name = odd[0].lstrip("-")
    for rc, err, _ in results:
        assert rc == 2, err
        assert "started with different settings" in err
        assert f"{name}: ranks 0,1 = " in err and "rank 2 = " in err
    ends = [t for _, _, t in results]
    assert max(ends) - min(ends) < 10.0  # all stop together, not after a timeout


@pytest.mark.slow
@pytest.mark.parametrize(
    "odd, reason",
    [
        (["--batch-size", "0"], "its command line was refused"),  # argparse, before any set-up
        (
            ["--aggregator-option", "bogus=1"],
            "option(s) bogus; valid:",
        ),  # Trainer (the default mode names its options)
    ],
    ids=["argparse", "config"],
)
def test_one_rank_that_cannot_start_stops_every_rank(odd, reason):
    results = _launch([[], odd])
    for rc, err, _ in results:
        assert rc == 2, err
    assert "not every peer could start: rank 1: " in results[0][1] and reason in results[0][1]


def test_second_run_into_a_locked_folder_stops_every_rank(tmp_path):
    holder = RunDir(tmp_path)  # a run in progress (this test process)
    holder.open(resume=False)
    try:
        results = _launch([["-o", str(tmp_path)]] * 2)
    finally:
        holder.close()
    for rc, err, _ in results:
        assert rc == 2, err
        assert f"rank 0: {tmp_path} is in use by another run (pid {os.getpid()} on" in err
    assert not (tmp_path / METRICS).exists() and not (tmp_path / RUN_INFO).exists()


@pytest.mark.slow
def test_three_processes_write_one_run_equal_to_in_process(tmp_path):
    out = tmp_path / "run"
    results = _launch([["-o", str(out)]] * 3)
    assert [rc for rc, _, _ in results] == [0, 0, 0], [e for _, e, _ in results]
    rounds = [json.loads(x)["round"] for x in (out / METRICS).read_text().splitlines()]
    assert rounds == [1, 2]  # rank 0 alone wrote the metrics
    assert json.loads((out / RUN_INFO).read_text())["config"]["peers"] == 3
    for r in (1, 2):
        log = (out / f"rank-{r}.log").read_text().splitlines()
        assert log[0].startswith(f"dmhe rank {r} of 3")
        assert [json.loads(x)["round"] for x in log[1:]] == [1, 2]
    assert not (out / "rank-0.log").exists()
    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 8, 8), synthetic_size=(120, 40))
    cfg.peers, cfg.rounds = 3, 2
    ref = Trainer(cfg)
    ref.train()
    want = flatten_state(ref.model)
    for r in range(3):
        assert oct((out / f"rank-{r}").stat().st_mode & 0o777) == "0o700"
        ckpt = RunDir(out, rank=r).load_checkpoint("cpu")
        assert ckpt is not None and ckpt["round"] == 2
        ref.model.load_state_dict(ckpt["model"])
        assert torch.equal(flatten_state(ref.model), want)

    # a damaged checkpoint on one rank stops every rank on resume, and nothing is truncated
    path = Path(out / "rank-1" / "checkpoint.pt")
    path.write_bytes(path.read_bytes()[:-64])
    metrics = (out / METRICS).read_bytes()
    results = _launch([["-o", str(out), "--resume", "--rounds", "3"]] * 3)
    for rc, err, _ in results:
        assert rc == 2, err
        assert "rank 1: checkpoint" in err and "unreadable" in err
    assert (out / METRICS).read_bytes() == metrics
