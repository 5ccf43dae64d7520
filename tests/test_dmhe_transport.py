"""Transports and ring aggregation: exact sums, byte counts, per-peer traffic flat in K."""

from __future__ import annotations

import numpy as np
import pytest

from dmhe.aggregation import (
    PairwiseMaskAggregator,
    PlaintextAggregator,
    get_aggregator_class,
    ring_allreduce,
)
from dmhe.transport import InProcessNetwork, PeerDropped, run_peers


def _inputs(k: int, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-(2**40), 2**40, size=n, dtype=np.int64) for _ in range(k)]


@pytest.mark.parametrize("k", [2, 5], ids=lambda k: f"K={k}")
def test_in_process_send_recv_counts_bytes(k):
    def body(t):
        for dst in range(k):
            if dst != t.rank:
                t.send(dst, bytes([t.rank]) * (10 + t.rank))
        got = {src: t.recv(src) for src in range(k) if src != t.rank}
        t.barrier()
        return got, dict(t.bytes_sent), dict(t.bytes_received)

    results = run_peers(k, body)
    for r, (got, sent, received) in enumerate(results):
        assert got == {s: bytes([s]) * (10 + s) for s in range(k) if s != r}
        assert sent == {d: 10 + r for d in range(k) if d != r}
        assert received == {s: 10 + s for s in range(k) if s != r}


def test_messages_are_fifo_per_pair():
    def body(t):
        if t.rank == 0:
            for i in range(50):
                t.send(1, i.to_bytes(2, "little"))
            return None
        return [int.from_bytes(t.recv(0), "little") for _ in range(50)]

    assert run_peers(2, body)[1] == list(range(50))


def test_first_exception_is_reraised_and_others_released():
    def body(t):
        if t.rank == 1:
            raise KeyError("boom")
        return t.recv(1)  # would wait forever without the abort

    with pytest.raises(KeyError):
        run_peers(3, body)


def test_dropped_peer_raises_on_send_and_on_recv_from_it():
    net = InProcessNetwork(3)
    net.drop(2)

    def body(t):
        if t.rank == 2:
            t.send(0, b"x")
        return t.recv(2)

    with pytest.raises(PeerDropped) as info:
        net.run(body)
    assert info.value.rank == 2


def test_drop_probability_drops_someone():
    net = InProcessNetwork(4, drop_prob=0.5, seed=1)

    def body(t):
        for _ in range(20):
            t.send((t.rank + 1) % 4, b"y")
        return "done"

    results = net.run(body)  # only self-drops: the run itself succeeds
    assert any(isinstance(r, PeerDropped) for r in results)
    assert net.dropped


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8], ids=lambda k: f"K={k}")
@pytest.mark.parametrize("n", [1, 7, 1000], ids=lambda n: f"n={n}")
def test_plaintext_aggregator_exact_sum(k, n):
    xs = _inputs(k, n)

    def body(t):
        agg = PlaintextAggregator(k)
        agg.setup(t)
        return agg.allreduce_sum(t, xs[t.rank])

    for out in run_peers(k, body):
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, np.sum(xs, axis=0))


def test_int64_sum_wraps_modulo_2_64():
    xs = [np.array([2**62, -(2**62)], dtype=np.int64)] * 4
    out = run_peers(4, lambda t: ring_allreduce(t, xs[t.rank]))
    np.testing.assert_array_equal(out[0], np.array([0, 0], dtype=np.int64))


def test_float_allreduce_identical_on_every_peer():
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(101) for _ in range(5)]
    outs = run_peers(5, lambda t: PlaintextAggregator(5).allreduce_sum_float(t, xs[t.rank]))
    for o in outs:
        assert o.tobytes() == outs[0].tobytes()
    np.testing.assert_allclose(outs[0], np.sum(xs, axis=0), rtol=1e-12)


@pytest.mark.parametrize("k", [4, 32], ids=lambda k: f"K={k}")
def test_ring_traffic_per_peer_is_flat_in_k(k):
    n = 32 * 1024  # divisible by both K: every chunk has the same size
    payload = 8 * n
    xs = _inputs(k, n)

    def body(t):
        PlaintextAggregator(k).allreduce_sum(t, xs[t.rank])
        return t.total_bytes_sent, t.total_bytes_received

    for sent, received in run_peers(k, body):
        assert sent == received == 2 * (k - 1) * payload // k
        assert 1.5 * payload <= sent < 2 * payload  # K=4: 1.5x, K=32: 1.94x, K->inf: 2x


def test_registry_names():
    assert get_aggregator_class("plaintext") is PlaintextAggregator
    assert get_aggregator_class("secagg") is PairwiseMaskAggregator
    with pytest.raises(ValueError):
        get_aggregator_class("nope")


def test_permanent_drop_survives_revive_all_and_sub_rings_keep_original_ranks():
    from dmhe.transport import SubRing, original_rank

    net = InProcessNetwork(4)
    net.drop(2, permanent=True)
    net.drop(1)
    net.revive_all()
    assert net.dropped == frozenset({2}) and net.gone == frozenset({2})

    def body(t):
        members = t.reachable_peers()
        if t.rank not in members:
            t.leave()
        sub = SubRing(t, t.live_peers(among=members))
        total = PlaintextAggregator(3).allreduce_sum(sub, np.array([t.rank], dtype=np.int64))
        return sub.members, original_rank(sub), sub.live_peers(), int(total[0])

    results = net.run(body)
    assert isinstance(results[2], PeerDropped) and results[2].rank == 2
    for r in (0, 1, 3):
        assert results[r] == ([0, 1, 3], r, [0, 1, 2], 0 + 1 + 3)
