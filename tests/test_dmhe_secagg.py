"""Pairwise-mask secure aggregation: masks cancel, masked vectors hide the inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dmhe.aggregation import MODP_2048_P, PairwiseMaskAggregator, _KeyAgreement
from dmhe.transport import run_peers


@pytest.mark.parametrize("k", [2, 3, 6], ids=lambda k: f"K={k}")
def test_masks_cancel_and_hide(k):
    rng = np.random.default_rng(k)
    xs = [rng.integers(-1000, 1000, size=257, dtype=np.int64) for _ in range(k)]

    def body(t):
        agg = PairwiseMaskAggregator(k)
        agg.setup(t)
        return agg.mask(t, xs[t.rank])

    masked = run_peers(k, body)
    total = np.zeros(257, dtype=np.uint64)
    for m, x in zip(masked, xs, strict=True):
        assert m.dtype == np.int64
        # A uniformly random mask equals the input at a coordinate with probability 2^-64.
        assert not np.any(m == x)
        total += m.view(np.uint64)
    np.testing.assert_array_equal(total.view(np.int64), np.sum(xs, axis=0))


@pytest.mark.parametrize("rekey", [True, False], ids=["rekey", "fixed-key"])
def test_allreduce_exact_over_rounds_and_quadratic_key_traffic(rekey):
    k, n = 5, 100
    rng = np.random.default_rng(0)
    rounds = [[rng.integers(-50, 50, size=n, dtype=np.int64) for _ in range(k)] for _ in range(3)]

    def body(t):
        agg = PairwiseMaskAggregator(k, rekey_each_round=rekey)
        agg.setup(t)
        setup_bytes = t.total_bytes_sent
        outs = [agg.allreduce_sum(t, xs[t.rank]) for xs in rounds]
        return outs, setup_bytes, t.total_bytes_sent

    for outs, setup_bytes, total in run_peers(k, body):
        for out, xs in zip(outs, rounds, strict=True):
            np.testing.assert_array_equal(out, np.sum(xs, axis=0))
        assert setup_bytes == 32 * (k - 1)  # one X25519 public key to every other peer
        ring = 3 * 2 * (k - 1) * 8 * n // k
        extra_rekeys = 2 * 32 * (k - 1) if rekey else 0
        assert total == setup_bytes + ring + extra_rekeys


def test_modp_fallback_agrees():
    a, b = _KeyAgreement(force_modp=True), _KeyAgreement(force_modp=True)
    assert a.shared_secret(b.public_bytes()) == b.shared_secret(a.public_bytes())
    assert pow(2, MODP_2048_P - 1, MODP_2048_P) == 1  # Fermat check of the group prime


def test_modp_fallback_aggregator():
    xs = [np.arange(10, dtype=np.int64) * (i + 1) for i in range(3)]

    def body(t):
        agg = PairwiseMaskAggregator(3, force_modp=True)
        agg.setup(t)
        return agg.allreduce_sum(t, xs[t.rank])

    for out in run_peers(3, body):
        np.testing.assert_array_equal(out, np.sum(xs, axis=0))
