"""The log-depth topologies (dmhe.topologies: recursive halving/doubling, Bruck) against the
ring and against numpy.

- int64, modular uint32 and float sums: identical on every peer, equal to the ring's and to
  numpy's (exact combines), for K in {1,2,3,4,5,8,13}, with uneven and empty chunks;
- the chunk index a peer ends with is the ring's, and all_gather takes any common shift;
- sequential message steps per collective <= ceil(log2 K) + 2 (ring: K - 1);
- bytes: exactly the ring's per peer (halving: for K a power of two; Bruck: every K);
- ciphertexts and decryption shares: the encrypted round's reduce-scatters give the ring's bits;
- the flat path (one ChunkBuffer per peer, FlatArrays codecs) sends the per-chunk codec's bytes
  and gives its results, and refuses a message that does not fit the chunks it must fill;
- the symbolic sender sets of ``dmhe.peercpu.reduce_scatter_senders`` are a real run's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmhe.collectives import (
    RING,
    ChunkBuffer,
    Codec,
    _schedule,
    all_gather,
    all_gather_bytes,
    all_reduce,
    all_reduce_array,
    array_codec,
    reduce_scatter,
    run_steps,
    run_steps_flat,
    split_chunks,
)
from dmhe.netmodel import LinkProfile, simulate
from dmhe.peercpu import reduce_scatter_senders
from dmhe.topologies import (
    BRUCK,
    BRUCK_BATCHED,
    HALVING,
    HALVING_BATCHED,
    Bruck,
    collective_steps,
    make_topology,
    pack_blobs,
    unpack_blobs,
)
from dmhe.transport import Transport, run_peers

KS = [1, 2, 3, 4, 5, 8, 13]
LOG = [HALVING, BRUCK, HALVING_BATCHED, BRUCK_BATCHED]
log_topologies = pytest.mark.parametrize("topo", LOG, ids=lambda t: t.name)
# one latency unit per message, no bandwidth cost, no compute: the clock counts steps
UNIT = LinkProfile("unit", 1e30, 1.0)


def _ids(k: int) -> str:
    return f"K={k}"


@pytest.mark.parametrize("k", KS, ids=_ids)
@pytest.mark.parametrize("n", [0, 3, 37])
@log_topologies
def test_int64_sum_equals_ring_and_numpy(k, n, topo):
    rng = np.random.default_rng(1000 * k + n)
    xs = [rng.integers(-(2**62), 2**62, size=n, dtype=np.int64) for _ in range(k)]
    want = np.sum(xs, axis=0, dtype=np.int64) if n else np.zeros(0, np.int64)
    ring = run_peers(k, lambda t: all_reduce_array(t, xs[t.rank], RING))
    halving = run_peers(k, lambda t: all_reduce_array(t, xs[t.rank], topo))
    for a, b in zip(ring, halving):
        np.testing.assert_array_equal(b, want)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", KS, ids=_ids)
@log_topologies
def test_modular_uint32_sum_equals_ring_and_numpy(k, topo):
    q = np.uint64(4294967291)  # a prime below 2**32, as in the residue sums of the key set-up
    rng = np.random.default_rng(k)
    xs = [
        rng.integers(0, int(q), size=(2, 11), dtype=np.uint64).astype(np.uint32) for _ in range(k)
    ]
    cols = np.array_split(np.arange(11), k)
    codec = Codec(
        encode=lambda a: np.ascontiguousarray(a).astype("<u4").tobytes(),
        decode=lambda b, i: np.frombuffer(b, "<u4").reshape(2, len(cols[i])).copy(),
        combine=lambda a, b: ((a.astype(np.uint64) + b) % q).astype(np.uint32),
    )

    def body(topology):
        def fn(t):
            chunks = [np.ascontiguousarray(xs[t.rank][:, c]) for c in cols]
            return np.concatenate(all_reduce(t, chunks, codec, topology), axis=-1)

        return fn

    want = (np.sum([x.astype(np.uint64) for x in xs], axis=0) % q).astype(np.uint32)
    for a, b in zip(run_peers(k, body(RING)), run_peers(k, body(topo))):
        np.testing.assert_array_equal(b, want)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", KS, ids=_ids)
@log_topologies
def test_float_sum_identical_on_every_peer(k, topo):
    rng = np.random.default_rng(7 + k)
    xs = [rng.standard_normal(29) for _ in range(k)]
    out = run_peers(k, lambda t: all_reduce_array(t, xs[t.rank], topo))
    for o in out:
        assert o.tobytes() == out[0].tobytes()
    np.testing.assert_allclose(out[0], np.sum(xs, axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", KS, ids=_ids)
@log_topologies
def test_reduce_scatter_index_is_the_rings(k, topo):
    xs = [np.arange(3 * k, dtype=np.int64) * (r + 1) for r in range(k)]
    codec = array_codec(np.int64)

    def fn(topology):
        return lambda t: reduce_scatter(t, split_chunks(xs[t.rank], k), codec, topology)

    ring, halving = run_peers(k, fn(RING)), run_peers(k, fn(topo))
    assert sorted(i for i, _ in halving) == list(range(k))
    for (ia, a), (ib, b) in zip(ring, halving):
        assert ia == ib
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", KS, ids=_ids)
@pytest.mark.parametrize("shift", [0, 1, 3])
@log_topologies
def test_all_gather_any_common_shift(k, shift, topo):
    def fn(t):
        index = (t.rank + shift) % k
        blob = bytes([index]) * (index % 3)  # uneven, some empty
        return all_gather(t, index, blob, Codec(bytes, lambda b, _i: b), topo)

    want = [bytes([i]) * (i % 3) for i in range(k)]
    assert run_peers(k, fn) == [want] * k
    blobs = run_peers(k, lambda t: all_gather_bytes(t, bytes([7, t.rank]), topo))
    assert blobs == [[bytes([7, r]) for r in range(k)]] * k


@log_topologies
def test_bad_input_refused(topo):
    with pytest.raises(ValueError, match="need 3 chunks"):
        run_peers(3, lambda t: topo.reduce_scatter(t, [b""], Codec(bytes, lambda b, i: b)))
    with pytest.raises(ValueError, match="combine"):
        run_peers(2, lambda t: topo.reduce_scatter(t, [b"", b""], Codec(bytes, lambda b, i: b)))
    with pytest.raises(ValueError, match="outside"):
        run_peers(2, lambda t: topo.all_gather(t, 5, b"", Codec(bytes, lambda b, i: b)))
    with pytest.raises(ValueError, match="unknown topology"):
        make_topology("tree", 4)


@pytest.mark.parametrize("k", [*KS, 16], ids=_ids)
@log_topologies
def test_sequential_steps_are_logarithmic(k, topo):
    codec = array_codec(np.int64)
    xs = np.arange(40, dtype=np.int64)
    rs = simulate(
        k,
        lambda t: reduce_scatter(t, split_chunks(xs, k), codec, topo),
        UNIT,
        measure_compute=False,
    )
    ag = simulate(
        k,
        lambda t: all_gather(t, (t.rank + 1) % k, xs, codec, topo),
        UNIT,
        measure_compute=False,
    )
    bound = math.ceil(math.log2(k)) + 2 if k > 1 else 0
    for res in (rs, ag):
        assert res.steps <= bound
        assert res.steps <= collective_steps(topo.name, k)
        if isinstance(topo, Bruck):
            assert res.steps == math.ceil(math.log2(k)) if k > 1 else res.steps == 0
        assert res.round_time == pytest.approx(res.steps)  # one latency per step, nothing else

    def round4(t):  # the encrypted round: four collectives in a row
        i, c = reduce_scatter(t, split_chunks(xs, k), codec, topo)
        all_gather(t, i, c, codec, topo)
        i, c = reduce_scatter(t, split_chunks(xs, k), codec, topo)
        return all_gather(t, i, c, codec, topo)

    four = simulate(k, round4, UNIT, measure_compute=False)
    assert four.steps <= 4 * math.ceil(math.log2(k)) + 4 if k > 1 else four.steps == 0
    ring = simulate(k, lambda t: all_reduce_array(t, xs, RING), UNIT, measure_compute=False)
    assert ring.steps == 2 * collective_steps("ring", k)


@pytest.mark.parametrize("k", [2, 4, 8, 16, 3, 5, 13], ids=_ids)
@log_topologies
def test_bytes_match_the_ring(k, topo):
    xs = np.arange(16 * 13 * 15, dtype=np.int64)  # divisible by every K here: equal chunks

    def run(topology):
        return simulate(k, lambda t: all_reduce_array(t, xs, topology), measure_compute=False)

    ring, log = run(RING), run(topo)
    assert sum(log.bytes_sent) == sum(log.bytes_received)
    if topo.batch:  # one message per step, with a 4-byte count and 4 bytes per chunk on top
        single = run(BRUCK if isinstance(topo, Bruck) else HALVING)
        for r in range(k):
            assert log.messages[r] <= 2 * collective_steps(topo.name, k)
            extra = 4 * (single.messages[r] + log.messages[r])
            assert log.bytes_sent[r] == single.bytes_sent[r] + extra
    elif k & (k - 1) == 0 or isinstance(topo, Bruck):  # Bruck: for every K
        assert log.bytes_sent == ring.bytes_sent
        assert log.messages == ring.messages
    else:  # the fold-in partners carry their extra's vector on top
        assert max(log.bytes_sent) <= 2 * max(ring.bytes_sent) + xs.nbytes


def test_batched_messages_round_trip_and_refuse_garbage():
    blobs = [b"", b"abc", bytes(range(256)), b""]
    assert unpack_blobs(pack_blobs(blobs)) == blobs
    assert unpack_blobs(pack_blobs([])) == []
    good = pack_blobs(blobs)
    for bad in (b"", good[:-1], good + b"x", b"\xff\xff\xff\xff"):
        with pytest.raises(ValueError, match="batched message"):
            unpack_blobs(bad)


@pytest.mark.parametrize("k", [3, 4, 5, 8, 13], ids=_ids)
def test_encrypted_reduce_scatters_give_the_rings_bits(k):
    """Whole-ciphertext chunks (the threshold round's; the others run on coefficient slices,
    tests/test_dmhe_slices.py): every topology gives the ring's bits."""
    from dmhe.encrypted import EncryptedAggregator
    from gpubfv.serialization import to_bytes

    slots = EncryptedAggregator(k, value_bits=8).encoder.slots
    n = 3 * slots + 5  # four ciphertexts: uneven chunks, and an empty one for K=5

    def bits(ct):
        return np.asarray(ct.data).tobytes() if hasattr(ct, "data") else to_bytes(ct)

    def body(t):
        agg = EncryptedAggregator(k, value_bits=8)
        agg.setup(t)
        sizes = agg._chunk_sizes(n)
        values = np.arange(n, dtype=np.int64) % 100 - 50 + t.rank
        chunks = agg.encrypt(agg._validated(values), sizes)
        both = (RING, *LOG)
        ct_codec = agg.ct_codec(sizes)  # whole ciphertexts: the threshold round's chunks
        rs = [reduce_scatter(t, chunks, ct_codec, topo) for topo in both]
        c1s = [all_gather(t, i, c, ct_codec, topo) for (i, c), topo in zip(rs, both)]
        shares = agg.decryption_shares(c1s[0])  # smudged once: reused by all
        srs = [reduce_scatter(t, shares, agg.share_codec(), topo) for topo in both]
        sums = [
            np.concatenate(
                all_gather(t, i, agg.open_chunk(c, s), agg.sums_codec(sizes), topo), axis=-1
            )
            for (i, c), (_, s), topo in zip(rs, srs, both)
        ]
        agg._journal.release()
        return (
            [i for i, _ in rs] + [i for i, _ in srs],
            [bits(c) for _, c in rs],
            [[bits(c) for c in g] for g in c1s],
            [to_bytes(s) for _, s in srs],
            sums,
        )

    want = np.sum([np.arange(n) % 100 - 50 + r for r in range(k)], axis=0)
    for r, (idx, cts, c1s, shares, sums) in enumerate(run_peers(k, body)):
        assert idx == [(r + 1) % k] * (2 * len(cts))
        for j in range(1, len(cts)):  # every topology gives the ring's bits
            assert cts[j] == cts[0]  # the aggregated ciphertext
            assert c1s[j] == c1s[0]
            assert shares[j] == shares[0]
            np.testing.assert_array_equal(sums[j], sums[0])
        agg = EncryptedAggregator(k, value_bits=8)
        got = sums[0].reshape(-1)[:n].astype(np.int64) - k * agg.offset
        np.testing.assert_array_equal(got, want)


def _per_chunk(codec):
    """The same wire form and combine without the FlatArrays declaration."""
    return Codec(codec.encode, codec.decode, codec.combine)


@pytest.mark.parametrize("k", KS, ids=_ids)
@pytest.mark.parametrize("topo", [RING, *LOG], ids=lambda t: t.name)
def test_flat_path_sends_the_per_chunk_bytes_and_gives_its_results(k, topo):
    rng = np.random.default_rng(50 + k)
    xs = [rng.integers(-(2**40), 2**40, size=2 * k + 3, dtype=np.int64) for _ in range(k)]
    sizes = [(i * 7) % 4 for i in range(k)]  # uneven, some empty
    cuts = np.cumsum(sizes)[:-1]
    flat = array_codec(np.int64)
    assert flat.flat is not None and flat.flat.ufunc is np.add

    def fn(codec, how, topology=topo):
        def body(t):
            if how == "array":
                return all_reduce_array(t, xs[t.rank], topology).tolist()
            chunks = np.split(xs[t.rank][: sum(sizes)], cuts)
            if how == "rs":
                i, c = reduce_scatter(t, chunks, codec, topology)
                return [i, *c.tolist()]
            return [c.tolist() for c in all_reduce(t, chunks, codec, topology)]

        return body

    for how in ("rs", "ar", "array"):
        a = simulate(k, fn(flat, how), UNIT, measure_compute=False)
        b = simulate(k, fn(_per_chunk(flat), how, _Generic(topo)), UNIT, measure_compute=False)
        assert a.results == b.results, how
        assert a.bytes_sent == b.bytes_sent and a.messages == b.messages, how
        assert a.steps == b.steps, how


class _Generic:
    """A topology that is not Scheduled: all_reduce_array takes the per-chunk path."""

    def __init__(self, inner):
        self.inner = inner

    def reduce_scatter(self, transport, chunks, codec):
        return self.inner.reduce_scatter(transport, chunks, _per_chunk(codec))

    def all_gather(self, transport, index, chunk, codec):
        return self.inner.all_gather(transport, index, chunk, codec)


def test_chunk_buffer_messages_are_pack_blobs_and_bad_ones_are_refused():
    data = np.arange(10, dtype=np.int32)
    buf = ChunkBuffer(data.copy(), np.array([0, 3, 3, 7, 10]))
    runs = ((3, 2),)  # chunk 3, then chunk 0: wraps around
    msg = buf.message(runs)
    assert msg == pack_blobs([data[7:10].tobytes(), data[0:3].tobytes()])
    other = ChunkBuffer(np.zeros(10, dtype=np.int32), buf.offsets)
    other.take(runs, msg, None)
    np.testing.assert_array_equal(other.data, [0, 1, 2, 0, 0, 0, 0, 7, 8, 9])
    other.take(runs, msg, np.add)
    np.testing.assert_array_equal(other.data, [0, 2, 4, 0, 0, 0, 0, 14, 16, 18])
    wrong_lengths = pack_blobs([data[7:9].tobytes(), data[0:4].tobytes()])
    for bad in (b"", msg[:-4], msg + b"\0" * 4, pack_blobs([b"x" * 12]), wrong_lengths):
        with pytest.raises(ValueError, match="batched message"):
            other.take(runs, bad, np.add)
    with pytest.raises(ValueError, match="expected 16"):
        other.take_raw(2, b"\0" * 12, None)
    for offsets in ([0, 5], [1, 10], [0, 6, 4, 10]):
        with pytest.raises(ValueError, match="offsets"):
            ChunkBuffer(data, np.array(offsets))


class _Scripted(Transport):
    """Hands out the given messages, keeps what is sent."""

    def __init__(self, k, messages):
        super().__init__(0, k)
        self.inbox, self.sent = list(messages), []

    def send(self, dst, payload):
        self.sent.append((dst, payload))

    def recv(self, src):
        return self.inbox.pop(0)

    def barrier(self):
        pass


def test_per_chunk_flat_messages_wrap_fold_and_refuse_a_wrong_length():
    buf = ChunkBuffer(np.arange(10, dtype=np.int32), np.array([0, 3, 3, 7, 10]))
    steps = [("send", 1, ((3, 2),)), ("fold", 1, ((3, 2),)), ("put", 1, ((1, 2),))]
    msgs = [np.full(3, 5, np.int32).tobytes(), np.ones(3, np.int32).tobytes(), b""]
    msgs.append(np.full(4, 9, np.int32).tobytes())
    t = _Scripted(4, msgs)
    run_steps_flat(t, steps, buf, np.add, batch=False)
    sent = [np.arange(7, 10, dtype=np.int32).tobytes(), np.arange(3, dtype=np.int32).tobytes()]
    assert t.sent == [(1, sent[0]), (1, sent[1])]  # chunk 3, then chunk 0: the run wraps
    np.testing.assert_array_equal(buf.data, [1, 2, 3, 9, 9, 9, 9, 12, 13, 14])
    with pytest.raises(ValueError, match="chunk 2: 4 bytes, expected 16"):
        run_steps_flat(_Scripted(4, [b"\0" * 4]), [("put", 1, ((2, 1),))], buf, None, False)
    # the schedules are built once per (topology, K, peer) and read, never changed
    for topo in (RING, BRUCK, HALVING_BATCHED):
        assert _schedule(topo, "rs", 13, 5, 0) == topo.reduce_scatter_steps(13, 5)
        assert _schedule(topo, "ag", 13, 5, 6)[0] == topo.all_gather_steps(13, 5, 6)


def test_empty_ciphertext_chunks_travel_as_zero_bytes_and_are_checked():
    from dmhe.encrypted import EncryptedAggregator

    agg = EncryptedAggregator(5, value_bits=8)
    sizes = [1, 0]
    ct = agg.ct_codec(sizes)
    empty = ct.decode(b"", 1)
    assert empty.batch_shape == (0,) and (empty.level, empty.bits) == (agg.level, agg.bits)
    assert ct.encode(empty) == b"" and ct.combine(empty, empty).batch_shape == (0,)
    with pytest.raises(ValueError, match="empty frame"):
        ct.decode(b"", 0)  # chunk 0 holds one ciphertext: an empty frame is refused


@pytest.mark.parametrize("k", [1, 3, 5, 8, 13], ids=_ids)
@pytest.mark.parametrize("topo", [RING, *LOG], ids=lambda t: t.name)
def test_reduce_scatter_senders_match_a_real_run(k, topo):
    """``dmhe.peercpu.reduce_scatter_senders`` (the symbolic run the encrypted per-peer profile
    builds its share messages from) equals what a real reduce-scatter delivers: a codec whose
    chunks are sender bitsets records, on every peer, each message's sets in order."""
    indices = sorted({0, k // 2, k - 1})
    got: dict[int, list[dict[int, int]]] = {r: [] for r in range(k)}

    def body(t: Transport) -> int:
        msg: dict[int, int] = {}

        def decode(b: bytes, i: int) -> int:
            msg[i] = int.from_bytes(b, "little")
            return msg[i]

        def combine(a: int, b: int) -> int:
            assert not a & b, "a peer counted twice"
            return a | b

        codec: Codec[int] = Codec(lambda s: s.to_bytes(2, "little"), decode, combine)
        steps, own = topo.reduce_scatter_steps(k, t.rank)
        held = [1 << t.rank] * k
        for step in steps:  # one step at a time, to cut what arrives into messages
            run_steps(t, [step], held, codec, topo.batch)
            if step[0] != "send":
                got[t.rank].append({i: msg[i] for i in indices if i in msg})
                msg.clear()
        return held[own]

    owned = run_peers(k, body)
    assert owned == [(1 << k) - 1] * k
    for r in range(k):
        assert reduce_scatter_senders(topo, k, indices, r) == got[r]
