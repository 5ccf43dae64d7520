"""The dropout simulation means what users think: --drop-prob is the probability that a peer is
lost in a round; with threshold keys the round finishes with the live >= t peers (its
contributors), without them it is redone (a retry); set-up losses are separate."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from dmhe.cli import main
from dmhe.dropouts import PeersLost, check_survivors, lost_in_attempt
from dmhe.pipeline import UpdatePipeline
from dmhe.state import flatten_state
from dmhe.trainer import TrainConfig, Trainer

SMALL = dict(
    dataset="synthetic",
    model="mlp",
    synthetic_shape=(1, 6, 6),
    synthetic_size=(160, 40),
    rounds=4,
    local_steps=1,
    batch_size=16,
)


def _trainer(**kw) -> Trainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(TrainConfig(**{**SMALL, **kw}))


def test_schedule_is_per_peer_per_round_and_reproducible():
    draws = [lost_in_attempt(7, r, 0, peers=5, prob=0.2) for r in range(1, 401)]
    assert draws == [lost_in_attempt(7, r, 0, peers=5, prob=0.2) for r in range(1, 401)]
    rate = sum(len(d) for d in draws) / (400 * 5)
    assert 0.15 < rate < 0.25  # each peer lost with probability 0.2 per round
    assert draws != [lost_in_attempt(8, r, 0, peers=5, prob=0.2) for r in range(1, 401)]
    retried = [lost_in_attempt(7, r, 1, peers=5, prob=0.2) for r in range(1, 401)]
    assert retried != draws  # a retry draws afresh
    assert lost_in_attempt(7, 1, 0, peers=5, prob=0.0) == frozenset()
    with pytest.raises(ValueError):
        lost_in_attempt(7, 1, 0, peers=5, prob=1.0)


def test_threshold_rounds_finish_with_the_live_peers_and_equal_a_plain_sum():
    """K=5, t=3, drop-prob 0.2: rounds with 3 or 4 contributors complete without a redo, and
    each round's parameters are the plaintext average over exactly those contributors."""
    tr = _trainer(mode="encrypted", peers=5, threshold=3, drop_prob=0.2, seed=3, rounds=6)
    metrics = tr.train()
    sizes = [len(m["contributors"]) for m in metrics]
    assert len(metrics) == 6
    assert set(sizes) & {3, 4}, sizes  # (seed 3 loses peers in several rounds)
    for m in metrics:
        lost = lost_in_attempt(3, m["round"], 0, peers=5, prob=0.2)
        if len(lost) <= 2:  # enough live peers: finished with them, no retry
            assert m["contributors"] == sorted(set(range(5)) - lost)
            assert m["retries"] == 0
        else:
            assert m["retries"] >= 1
    # the same rounds by hand in plaintext over the recorded contributors
    ref = _trainer(mode="plaintext-quantized", peers=5, seed=3, rounds=6)
    pipe = UpdatePipeline(mode="plaintext-quantized", peers=5, clip=1.0, clip_kind="l2",
                          scale_bits=16, sigma=None)  # fmt: skip
    for m in metrics:
        rnd, who = m["round"], m["contributors"]
        qs = [pipe.prepare(ref.local_update(p, rnd), peer=p, round_index=rnd,
                           aggregator=ref.aggregators[p]) for p in who]  # fmt: skip
        total = np.sum([np.asarray(q) for q in qs], axis=0)
        ref._apply(pipe.finish(total, len(who)))
        ref.round = rnd
    assert torch.equal(flatten_state(tr.model), flatten_state(ref.model))


def test_without_threshold_a_lost_peer_means_a_retry_counted():
    tr = _trainer(mode="plaintext-quantized", peers=4, drop_prob=0.2, max_retries=50, seed=1)
    metrics = tr.train()
    for m in metrics:
        assert m["contributors"] == [0, 1, 2, 3]
        first_clean = next(
            a for a in range(60) if not lost_in_attempt(1, m["round"], a, peers=4, prob=0.2)
        )
        assert m["retries"] == first_clean  # one retry per attempt that lost a peer
    assert sum(m["retries"] for m in metrics) >= 1
    ref = _trainer(mode="plaintext-quantized", peers=4, seed=1)
    ref.train()
    assert torch.equal(flatten_state(tr.model), flatten_state(ref.model))


def test_setup_losses_are_separate_and_retried():
    tr = _trainer(mode="plaintext-quantized", peers=3, setup_drop_prob=0.5, max_retries=30)
    tr.setup()
    expected = next(
        a for a in range(30) if not lost_in_attempt(0, 0, a, peers=3, prob=0.5, setup=True)
    )
    assert tr.setup_info["setup_retries"] == expected >= 1
    assert all(m["retries"] == 0 for m in [tr.run_round()])


def test_below_t_is_a_clear_error():
    with pytest.raises(PeersLost, match=r"peer\(s\) 1, 2 lost for good: 2 left, threshold 3"):
        check_survivors([0, 3], 4, 3)
    with pytest.raises(PeersLost, match="without --threshold every peer is needed"):
        check_survivors([0, 1, 3], 4, None)
    check_survivors([0, 1, 3], 4, 3)


def test_cli_metrics_show_contributors_and_retries(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--synthetic-shape", "1x6x6"]
    argv += ["--synthetic-size", "160,40", "--peers", "5", "--rounds", "3", "--no-progress"]
    argv += ["--mode", "encrypted", "--threshold", "3", "--drop-prob", "0.2", "--seed", "3"]
    argv += ["-o", str(out)]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(m["contributors"], list) and len(m["contributors"]) >= 3 for m in lines)
    assert all(isinstance(m["retries"], int) for m in lines)
    assert main([*argv[:-2], "-o", str(tmp_path / "x"), "--peer-timeout", "-1"]) == 2
