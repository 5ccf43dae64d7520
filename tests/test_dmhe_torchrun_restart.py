"""torchrun's own restarts (``--max-restarts``): every attempt meets on a store prefix of its own
(dmhe.launch.attempt_store). With torch's default rendezvous the restarted workers read the dead
attempt's gloo addresses from the agent's store and could not connect ("Connection refused"), so
``torchrun --max-restarts N ... --resume`` never got past a failure."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from dmhe.config import TrainConfig
from dmhe.launch import TorchrunEnv, attempt_store
from dmhe.rundir import RunDir
from dmhe.state import flatten_state
from dmhe.trainer import Trainer
from tests.test_dmhe_dropout_procs import _env, _metrics

ROUNDS, WORLD = 40, 3
DATA = ["--dataset", "synthetic", "--synthetic-shape", "1x6x6", "--synthetic-size", "160,40"]


def test_the_attempt_store_is_the_agents_under_a_prefix_per_attempt():
    import torch.distributed as dist

    env = TorchrunEnv(0, 1, 0)
    assert attempt_store(env, datetime.timedelta(seconds=5), environ={}) is None  # env://
    timeout = datetime.timedelta(seconds=10)
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout, wait_for_workers=False)
    agent = {
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_RESTART_COUNT": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(server.port),
    }
    store = attempt_store(env, timeout, environ=agent)
    store.set("rank_0", "addr")
    assert server.get("dmhe-attempt/2/rank_0") == b"addr" and not server.check(["rank_0"])


def _workers(parent: int, rank: int) -> list[int]:
    """The pids of torchrun ``parent``'s workers with ``RANK=rank``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and f"RANK={rank}".encode() in environ:
            found.append(int(pid))
    return found


@pytest.mark.slow  # two attempts of 3 processes (~30 s)
def test_torchrun_max_restarts_resumes_after_a_killed_worker(tmp_path):
    """kill -9 one worker of three (no threshold: the survivors stop); torchrun restarts all
    three, which resume from their last common checkpoint and finish with the parameters of the
    uninterrupted in-process run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(WORLD), "--max-restarts", "1", "-m", "dmhe", "train"]
    cmd += [*DATA, "--rounds", str(ROUNDS), "--batch-size", "16", "--mode", "encrypted"]
    cmd += ["--no-progress", "-o", str(out), "--resume"]  # --resume on a new folder starts it
    log = open(tmp_path / "torchrun.log", "w")  # noqa: SIM115 (closed below)
    run = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while len(_metrics(out)) < 3:
            assert time.monotonic() < deadline and run.poll() is None, "no progress"
            time.sleep(0.05)
        victims = _workers(run.pid, 1)
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        killed_after = len(_metrics(out))
        assert run.wait(timeout=600) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    assert killed_after < ROUNDS
    text = (tmp_path / "torchrun.log").read_text()
    assert "Connection refused" not in text and "Traceback" not in text, text[-3000:]
    assert [m["round"] for m in _metrics(out)] == list(range(1, ROUNDS + 1))
    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 6, 6), synthetic_size=(160, 40))
    cfg.peers, cfg.rounds, cfg.mode, cfg.batch_size = WORLD, ROUNDS, "encrypted", 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Trainer(cfg)
        ref.train()
    want = flatten_state(ref.model)
    for r in range(WORLD):
        ckpt = RunDir(out, rank=r).load_checkpoint("cpu")
        assert ckpt is not None and ckpt["round"] == ROUNDS
        ref.model.load_state_dict(ckpt["model"])
        assert torch.equal(flatten_state(ref.model), want)
