"""Restarted process peers (gloo on localhost): each peer persists its keys (rank-N/keys.bin) and
journals; a resume that declares another decryption budget D (more rounds) replaces them by a
new set-up, every peer alike, and ends with the parameters of the in-process run; a resume with
the same D loads them (no new set-up) and reopens the SAME journal files. Survivors of a kill -9
relaunched with fewer processes take over one original identity each (dmhe.restart)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
import warnings

import pytest
import torch

from dmhe.aggregators.encrypted_keystore import KEYS
from dmhe.config import TrainConfig
from dmhe.rundir import METRICS, RunDir
from dmhe.state import flatten_state
from dmhe.trainer import Trainer
from tests.test_dmhe_dropout_procs import (
    ROUNDS,
    VICTIM,
    K,
    _argv,
    _env,
    _free_port,
    _in_process,
    _metrics,
)
from tests.test_dmhe_processes import _launch

FLAGS = ["--mode", "encrypted", "--threshold", "2"]


def _journals(out, r):
    return sorted(p.name for p in (out / f"rank-{r}").glob("*.journal"))


@pytest.mark.slow  # 3 launches of 3 processes (230 s on the loaded 2-core box); fast sibling:
# tests/test_dmhe_keystore.py (key file, journal reopen) covers the same logic in one process
def test_resumed_processes_persist_replace_and_reload_their_keys(tmp_path):
    out = tmp_path / "run"
    first = _launch([["-o", str(out), *FLAGS]] * 3)  # 2 rounds
    assert [rc for rc, _, _ in first] == [0, 0, 0], [e for _, e, _ in first]
    old = {r: (out / f"rank-{r}" / KEYS).read_bytes() for r in range(3)}
    for r in range(3):
        assert stat.S_IMODE((out / f"rank-{r}" / KEYS).stat().st_mode) == 0o600
        assert [n.split("-")[0] for n in _journals(out, r)] == ["additive", "threshold"]

    # 3 rounds: another D, hence other parameters: a new set-up on every peer, new journals
    more = [["-o", str(out), "--resume", "--rounds", "3", *FLAGS]] * 3
    again = _launch(more)
    assert [rc for rc, _, _ in again] == [0, 0, 0], [e for _, e, _ in again]
    rounds = [json.loads(x)["round"] for x in (out / METRICS).read_text().splitlines()]
    assert rounds == [1, 2, 3]
    new = {r: (out / f"rank-{r}" / KEYS).read_bytes() for r in range(3)}
    journals = {r: _journals(out, r) for r in range(3)}
    for r in range(3):
        assert new[r] != old[r] and len(journals[r]) == 4

    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 8, 8), synthetic_size=(120, 40))
    cfg.peers, cfg.rounds, cfg.mode, cfg.threshold = 3, 3, "encrypted", 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Trainer(cfg)
        ref.train()
    want = flatten_state(ref.model)
    for r in range(3):
        ckpt = RunDir(out, rank=r).load_checkpoint("cpu")
        assert ckpt is not None and ckpt["round"] == 3
        ref.model.load_state_dict(ckpt["model"])
        assert torch.equal(flatten_state(ref.model), want)

    # the same D: the persisted keys are loaded (no new set-up) and the same journals reopened
    last = _launch(more)
    assert [rc for rc, _, _ in last] == [0, 0, 0], [e for _, e, _ in last]
    for r in range(3):
        assert (out / f"rank-{r}" / KEYS).read_bytes() == new[r]
        assert _journals(out, r) == journals[r]


@pytest.mark.slow  # two launches of 4 and 3 encrypted processes (minutes on the loaded 2-core
# box); fast sibling: tests/test_dmhe_restart_claims.py (claims, plan, rollback, 3-of-4 reload)
def test_survivors_restarted_with_a_smaller_world_finish_the_run(tmp_path):
    """kill -9 one of 4 (t = 3); the survivors go on in place, then are killed too; 3 processes
    relaunched with --resume take over the identities 0, 1, 3 and finish the run, with the
    parameters of the in-process run that lost peer 2 for good in the same round."""
    out = tmp_path / "run"

    def launch(world: int, *extra: str, tag: str) -> list[subprocess.Popen]:
        port = _free_port()
        return [
            subprocess.Popen(
                [sys.executable, "-m", "dmhe", *_argv(out, peer_timeout=20), *extra],
                env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=r, WORLD_SIZE=world),
                stdout=open(tmp_path / f"{tag}{r}.log", "w"),  # noqa: SIM115 (closed at exit)
                stderr=subprocess.STDOUT,
            )
            for r in range(world)
        ]

    procs = launch(K, tag="first")
    try:
        deadline = time.monotonic() + 900
        while len(_metrics(out)) < 2:
            assert time.monotonic() < deadline, "no progress"
            assert all(p.poll() is None for p in procs), "a peer exited early"
            time.sleep(0.05)
        procs[VICTIM].send_signal(signal.SIGKILL)
        while not any(VICTIM not in m["contributors"] for m in _metrics(out)):
            assert time.monotonic() < deadline, "the survivors did not go on"
            time.sleep(0.05)
    finally:
        for p in procs:  # the survivors are stopped too, wherever they are
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
    logged = [m["round"] for m in _metrics(out)]
    assert logged[-1] < ROUNDS, "the run ended before the survivors were stopped"

    again = launch(K - 1, "--resume", tag="again")
    codes = [p.wait(timeout=900) for p in again]
    text = {r: (tmp_path / f"again{r}.log").read_text() for r in range(K - 1)}
    assert codes == [0] * (K - 1), text
    assert not any("Traceback" in t for t in text.values()), text
    metrics = _metrics(out)
    assert [m["round"] for m in metrics] == list(range(1, ROUNDS + 1))
    without = [m["round"] for m in metrics if VICTIM not in m["contributors"]]
    assert without == list(range(without[0], ROUNDS + 1))
    ref = _in_process(drop_at=without[0])
    want = flatten_state(ref.model)
    for r in (0, 1, 3):  # every identity taken over finished the run with the same model
        ckpt = RunDir(out, rank=r).load_checkpoint("cpu")
        assert ckpt is not None and ckpt["round"] == ROUNDS and ckpt["members"] == [0, 1, 3]
        ref.work_model.load_state_dict(ckpt["model"])
        assert torch.equal(flatten_state(ref.work_model), want)
