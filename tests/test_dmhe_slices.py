"""The encrypted round on coefficient slices (dmhe.aggregators.encrypted_slices): the same bits
on every topology, the ring's bytes per peer on log-depth topologies, and bad bytes refused."""

from __future__ import annotations

import numpy as np
import pytest

from dmhe.aggregators.encrypted_slices import SliceRound, bit_rows
from dmhe.collectives import RING
from dmhe.encrypted import EncryptedAggregator
from dmhe.recordbuffer import SEAL_BYTES, RecordBuffer, _seal, even_offsets
from dmhe.topologies import BRUCK, BRUCK_BATCHED, HALVING, HALVING_BATCHED
from dmhe.transport import run_peers
from gpubfv.mhe.shares import ShareMismatch

TOPOLOGIES = (RING, HALVING, BRUCK, HALVING_BATCHED, BRUCK_BATCHED)


def _values(n: int, rank: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % 100 - 50 + rank


def _want(n: int, k: int) -> np.ndarray:
    return np.sum([_values(n, r) for r in range(k)], axis=0)


@pytest.mark.parametrize("k", [3, 4, 5, 8, 13])
def test_every_topology_gives_the_rings_bits(k):
    """One encryption and one share per peer, every pass run on every topology: the summed
    ciphertext, the gathered c1, the summed shares and the sums are the ring's, bit for bit."""
    slots = EncryptedAggregator(k, value_bits=8).encoder.slots
    n = 2 * slots + 5  # three ciphertexts: fewer than K for K > 3

    def body(t):
        agg = EncryptedAggregator(k, value_bits=8)
        agg.setup(t)
        r = SliceRound(agg, t, 3)
        buf = r.encrypt(agg._validated(_values(n, t.rank)))
        out = []
        words = digest = None
        for topo in TOPOLOGIES:
            agg.topology = topo
            b = RecordBuffer(buf.data.copy(), buf.offsets, buf.codec)
            own = r.reduce_ciphertexts(b)
            mine = b.chunk(own).copy()
            c1 = r.gather_c1(mine, own)
            if words is None:  # one share per c1 (the journal refuses a second)
                words, digest = r.share(c1)
            summed = r.reduce_shares(words.copy(), digest, own)
            sums = r.gather_plain(r.open(mine, summed), own)
            out.append((own, mine.tobytes(), c1.tobytes(), summed.tobytes(), sums))
        agg._journal.release()
        return out

    want = _want(n, k) + k * EncryptedAggregator(k, value_bits=8).offset
    for per_topology in run_peers(k, body):
        ring = per_topology[0]
        np.testing.assert_array_equal(ring[4][:n], want)
        for other in per_topology[1:]:
            assert other[:4] == ring[:4]
            np.testing.assert_array_equal(other[4], ring[4])


@pytest.mark.parametrize("k", [5, 8, 13, 24])
def test_log_depth_rounds_send_the_rings_bytes(k):
    """Two ciphertexts for K peers (whole-ciphertext chunks would leave K - 2 empty and load the
    peers next to the full ones): every peer of Bruck (any K) and of recursive halving (K a
    power of two; otherwise its fold-in partners carry a whole vector on top) sends the ring's
    bytes to within a position per chunk and the byte padding of its rows; the sum is exact."""
    n = EncryptedAggregator(k, value_bits=8).encoder.slots + 7

    def body(t, topo):
        agg = EncryptedAggregator(k, value_bits=8, topology=topo)
        agg.setup(t)
        before = t.total_bytes_sent
        total = agg.allreduce_sum(t, _values(n, t.rank))
        return t.total_bytes_sent - before, total

    sent = {}
    names = ["ring", "bruck", "bruck-batched"] + (["halving"] if k & (k - 1) == 0 else [])
    for name in names:
        results = run_peers(k, lambda t, name=name: body(t, name))
        for _, total in results:
            np.testing.assert_array_equal(total, _want(n, k))
        sent[name] = [s for s, _ in results]
    ring = sent["ring"]
    for name, got in sent.items():
        # the ring's per-peer bytes differ only by a chunk's position more or less
        assert max(got) <= max(ring) * 1.003, (name, max(got), max(ring))
        assert abs(np.mean(got) - np.mean(ring)) <= np.mean(ring) * 0.003, name


def test_even_offsets_cover_every_position_once():
    for positions, k in [(10, 3), (16384 * 3, 1000), (7, 7), (5, 8), (0, 2)]:
        off = even_offsets(positions, k)
        sizes = np.diff(off)
        assert off[0] == 0 and off[-1] == positions and len(off) == k + 1
        assert sizes.min() >= 0 and sizes.max() - sizes.min() <= 1
    with pytest.raises(ValueError):
        even_offsets(10, 0)
    with pytest.raises(ValueError):
        even_offsets(-1, 2)


def _buffer(widths=(5, 29), positions=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    data = np.stack([rng.integers(0, 1 << w, positions) for w in widths]).astype(np.uint32)
    return RecordBuffer(data, even_offsets(positions, k), bit_rows(widths))


def test_record_messages_round_trip_and_bad_ones_are_refused():
    src, dst = _buffer(), _buffer(seed=1)
    runs = ((2, 2),)  # chunks 2 and 0: wraps around
    msg = src.message(runs)
    dst.take(runs, msg, None)
    for i in (0, 2):
        np.testing.assert_array_equal(dst.chunk(i), src.chunk(i))
    before = dst.data.copy()
    for cut in range(len(msg)):  # every truncation
        with pytest.raises(ValueError, match="bytes"):
            dst.take(runs, msg[:cut], None)
    with pytest.raises(ValueError, match="bytes"):
        dst.take(runs, msg + b"\0", None)  # one byte more
    with pytest.raises(ValueError, match="bytes"):
        dst.take(((0, 3),), msg, None)  # a message of other runs
    for bit in range(8 * len(msg)):  # every single-bit flip
        bad = bytearray(msg)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError, match="check value"):
            dst.take(runs, bytes(bad), None)
    np.testing.assert_array_equal(dst.data, before)  # nothing refused was stored
    # a sender that reseals: a 5-bit row of 4 positions is 20 bits, 4 padding bits must be 0
    body = bytearray(msg[:-SEAL_BYTES])
    body[2] |= 0x80
    with pytest.raises(ValueError, match="padding|range"):
        dst.take(runs, bytes(body) + _seal(bytes(body)), None)
    with pytest.raises(ValueError):
        RecordBuffer(np.zeros((2, 5), np.uint32), np.array([0, 6]), bit_rows((5, 29)))
    with pytest.raises(ValueError):
        RecordBuffer(np.zeros((3, 5), np.uint32), np.array([0, 5]), bit_rows((5, 29)))


def test_ciphertext_fold_refuses_a_residue_not_below_its_modulus():
    agg = EncryptedAggregator(3, value_bits=8)
    r = SliceRound.__new__(SliceRound)
    r.agg = agg
    from dmhe.aggregators.encrypted_slices import SliceLayout

    lay = SliceLayout(agg, 1, 3)
    rows = len(lay.ct_widths)
    held = np.zeros((rows, 4), np.uint32)
    arrived = np.zeros((rows, 4), np.uint32)
    arrived[lay.w :, 1] = lay.q[:, 0].astype(np.uint32)  # q_i itself: one above the range
    with pytest.raises(ValueError, match="modulus"):
        lay.fold_ct(held, arrived)
    arrived[lay.w :, 1] -= 1  # q_i - 1 is fine, and q_i - 1 + 1 wraps to 0
    lay.fold_ct(held, arrived)
    held[lay.w :, 1] = 1
    lay.fold_ct(held, arrived)
    assert (held[lay.w :, 1] == 0).all()


def test_a_peer_with_another_c1_is_caught_by_the_share_headers():
    """Peer 1 decrypts a c1 that differs in one residue: every owner's share header then sums
    to something other than K times its digest, and the round fails instead of opening garbage."""
    k = 3
    n = EncryptedAggregator(k, value_bits=8).encoder.slots

    def body(t):
        agg = EncryptedAggregator(k, value_bits=8)
        agg.setup(t)
        r = SliceRound(agg, t, 1)
        buf = r.encrypt(agg._validated(_values(n, t.rank)))
        own = r.reduce_ciphertexts(buf)
        mine = buf.chunk(own)
        c1 = r.gather_c1(mine, own)
        if t.rank == 1:
            c1[0, 0, 0] ^= 1
        words, digest = r.share(c1)
        r.reduce_shares(words, digest, own)
        return "opened"

    with pytest.raises(ShareMismatch, match="another c1"):
        run_peers(k, body)
