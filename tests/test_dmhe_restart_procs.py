"""Restarted process peers (gloo on localhost): each peer persists its keys (rank-N/keys.bin) and
journals; a resume that declares another decryption budget D (more rounds) replaces them by a
new set-up, every peer alike, and ends with the parameters of the in-process run; a resume with
the same D loads them (no new set-up) and reopens the SAME journal files."""

from __future__ import annotations

import json
import stat
import warnings

import pytest
import torch

from dmhe.aggregators.encrypted_keystore import KEYS
from dmhe.config import TrainConfig
from dmhe.rundir import METRICS, RunDir
from dmhe.state import flatten_state
from dmhe.trainer import Trainer
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
