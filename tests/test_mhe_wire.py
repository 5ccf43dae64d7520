"""Wire encodings of the multiparty share types: round trips, refusals of bad bytes, replays.

Every share type (one per protocol step, single-sender and aggregated; ShamirShare;
ThresholdSecretShare) goes through `to_bytes` / `from_bytes` and must come back with equal arrays
and fields. Truncated or tampered bytes raise SerializationError; a frame of the retired untyped
share (type 32) is refused saying so; a peer-set bomb is refused before anything is expanded; a
share with another parameter set's fingerprint is refused; a share whose digest was altered
decodes (the digest is data) but does not combine with the shares it claims to belong to.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from functools import cache

import numpy as np
import pytest

from gpubfv import (
    PRNG,
    BatchEncoder,
    Context,
    Encryptor,
    Evaluator,
    KeyGenerator,
    Parameters,
    preset,
)
from gpubfv.mhe import (
    CollectiveDecrypt,
    DecryptionShare,
    GaloisKeyGen,
    GaloisKeyShare,
    KeySwitch,
    NoiseEstimate,
    Party,
    ProtocolShare,
    PublicKeyGen,
    PublicKeyShare,
    PublicKeySwitch,
    RelinKeyGen,
    ShamirShare,
    ShareJournal,
    ShareMismatch,
    Smudging,
    Thresholdizer,
    ThresholdSecretShare,
)
from gpubfv.mhe.wire import MAX_PEERS
from gpubfv.params import PRESETS
from gpubfv.serialization import (
    CHECKSUM_BYTES,
    FORMAT_VERSION,
    FRAME_OVERHEAD,
    HEADER,
    HEADER_BYTES,
    LENGTH_OFFSET,
    MAGIC,
    SerializationError,
    checksum,
    from_bytes,
    nbytes,
    packed_size,
    reseal,
    to_bytes,
)

K = 3
SETS = ["TOY6", "TOY8"]
BUDGET = 100
# the tiny insecure sets cannot hold statistical smudging: the opt-in renyi notion, stated
SMUDGING = Smudging(BUDGET, notion="renyi", lam=40)


def parties(ctx, sks, ids=None, active=frozenset()):
    ids = range(len(sks)) if ids is None else ids
    return [
        Party(
            ctx,
            sk,
            peer_id=i,
            journal=ShareJournal.in_memory(unsafe_not_persistent=True),
            prng=PRNG(bytes([i + 1]) * 32),
            active_set=active,
        )
        for sk, i in zip(sks, ids)
    ]


class Shares:
    """One share (and one aggregate) of every kind, for K = 3 peers."""

    def __init__(self, name: str) -> None:
        self.p = p = preset(name)
        self.ctx = ctx = Context(p, "cpu")
        rng = [PRNG(bytes([i + 1]) * 32) for i in range(K)]
        sks = [KeyGenerator(ctx, prng=rng[i]).gen_secret_key() for i in range(K)]
        self.sks = sks
        ps = parties(ctx, sks)
        out: dict[str, ProtocolShare] = {}
        ckg = PublicKeyGen(ctx, peers=K)
        crp = ckg.sample_crp(b"\x01" * 32)
        sh = [pa.public_key_share(ckg, crp) for pa in ps]
        out["ckg"], out["ckg-agg"] = sh[0], ckg.aggregate(sh)
        pk = ckg.finalize(out["ckg-agg"], crp)

        rkg = RelinKeyGen(ctx, peers=K)
        rcrp = rkg.sample_crp(b"\x02" * 32)
        r1 = [pa.relin_key_share_round1(rkg, rcrp) for pa in ps]
        agg1 = rkg.aggregate([s for _, s in r1])
        r2 = [pa.relin_key_share_round2(rkg, r1[i][0], agg1) for i, pa in enumerate(ps)]
        out["rkg-r1"], out["rkg-r1-agg"] = r1[0][1], agg1
        out["rkg-r2"], out["rkg-r2-agg"] = r2[1], rkg.aggregate(r2)

        gkg = GaloisKeyGen(ctx, peers=K)
        gcrp = gkg.sample_crp(b"\x03" * 32, 3)
        gs = [pa.galois_key_share(gkg, gcrp, 3) for pa in ps]
        out["gkg"], out["gkg-agg"] = gs[2], gkg.aggregate(gs)

        enc = BatchEncoder(ctx)
        self.x = np.random.default_rng(3).integers(-50, 50, (K, 2, p.n))
        cts = [Encryptor(ctx, pk, prng=rng[i]).encrypt(enc.encode(self.x[i])) for i in range(K)]
        self.ct = Evaluator(ctx).sum(cts)  # a batch of 2 ciphertexts
        self.other_ct = Evaluator(ctx).sum(cts[:2])
        self.enc = enc
        noise = NoiseEstimate.fresh(p, K).summed(K)
        self.cd = cd = CollectiveDecrypt(ctx, noise, peers=K, smudging=SMUDGING)
        self.parties = ps
        cs = [pa.decryption_share(cd, self.ct) for pa in ps]
        self.cks_shares = cs
        out["cks"], out["cks-agg"] = cs[0], cd.aggregate(cs)
        active = frozenset({1, 3})
        out["cks-active"] = parties(ctx, sks[:1], [3], active)[0].decryption_share(cd, self.ct)
        ks = KeySwitch(ctx, noise, peers=K, smudging=SMUDGING)
        out["cks-switch"] = parties(ctx, sks[1:2], [1])[0].key_switch_share(ks, self.ct, sks[2])

        kg = KeyGenerator(ctx, prng=PRNG(b"\x04" * 32))
        pk_r = kg.gen_public_key(kg.gen_secret_key())
        pcks = PublicKeySwitch(ctx, noise, peers=K, smudging=SMUDGING)
        pss = [pa.public_key_switch_share(pcks, self.ct, pk_r) for pa in parties(ctx, sks)]
        out["pcks"], out["pcks-agg"] = pss[0], pcks.aggregate(pss)
        # an aggregate whose sender set is not one run: runs {0}, {2}, {5, 6}
        sparse_parties = parties(ctx, [sks[i % K] for i in range(4)], [0, 2, 5, 6])
        out["ckg-agg-sparse"] = ckg.aggregate(
            [pa.public_key_share(ckg, crp) for pa in sparse_parties]
        )
        self.shares = out

        th = Thresholdizer(ctx, 2, [1, 2, 3])
        sent = [th.gen_shares(sks[i], i, rng[i]) for i in range(K)]
        self.shamir = sent[0][1]
        self.tsk = th.aggregate([sent[i][0] for i in range(K)], 1)


@cache
def shares(name: str) -> Shares:
    return Shares(name)


KINDS = [
    "ckg",
    "ckg-agg",
    "ckg-agg-sparse",
    "rkg-r1",
    "rkg-r1-agg",
    "rkg-r2",
    "rkg-r2-agg",
    "gkg",
    "gkg-agg",
    "cks",
    "cks-agg",
    "cks-active",
    "cks-switch",
    "pcks",
    "pcks-agg",
]


def assert_same_share(a: ProtocolShare, b: ProtocolShare) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        if f.name not in ("data", "params"):
            assert getattr(a, f.name) == getattr(b, f.name), f.name
    assert a.params.fingerprint == b.params.fingerprint
    assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape
    assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SETS)
def test_share_round_trip(name, kind):
    s = shares(name)
    share = s.shares[kind]
    buf = to_bytes(share)
    assert len(buf) == nbytes(share)
    back = from_bytes(s.p, buf, type(share))
    assert_same_share(share, back)
    assert_same_share(share, from_bytes(s.p, buf, ProtocolShare))
    assert to_bytes(back) == buf  # canonical


def test_share_fields_survive_where_they_matter():
    s = shares("TOY8")
    sh = s.shares
    assert sh["ckg-agg"].senders == frozenset({0, 1, 2})
    assert sh["ckg-agg-sparse"].senders == frozenset({0, 2, 5, 6})
    assert type(from_bytes(s.p, to_bytes(sh["rkg-r2"]))).__name__ == "RelinKeyShareRound2"
    assert from_bytes(s.p, to_bytes(sh["gkg"]), GaloisKeyShare).galois == 3
    assert sh["cks"].data.shape[:-2] == (2,)  # batched ciphertext: one share row block each
    back = from_bytes(s.p, to_bytes(sh["cks-active"]), DecryptionShare)
    assert back.active_set == frozenset({1, 3}) and back.senders == frozenset({3})
    with pytest.raises(SerializationError, match="expected DecryptionShare, got PublicKeyShare"):
        from_bytes(s.p, to_bytes(sh["ckg"]), DecryptionShare)
    with pytest.raises(SerializationError, match="expected PublicKeyShare"):
        from_bytes(s.p, to_bytes(sh["pcks"]), PublicKeyShare)


@pytest.mark.parametrize("name", SETS)
def test_shamir_and_threshold_share_round_trip(name):
    s = shares(name)
    back = from_bytes(s.p, to_bytes(s.shamir), ShamirShare)
    assert (back.sender, back.point) == (s.shamir.sender, s.shamir.point)
    assert np.array_equal(back.data, s.shamir.data)
    assert len(to_bytes(s.shamir)) == nbytes(s.shamir)
    back = from_bytes(s.p, to_bytes(s.tsk), ThresholdSecretShare)
    assert (back.point, back.senders) == (s.tsk.point, s.tsk.senders)
    assert np.array_equal(back.data, s.tsk.data)
    with pytest.raises(SerializationError, match="expected ShamirShare"):
        from_bytes(s.p, to_bytes(s.tsk), ShamirShare)


def test_decoded_shares_decrypt_the_sum():
    s = shares("TOY8")
    wire = [from_bytes(s.p, to_bytes(c), DecryptionShare) for c in s.cks_shares]
    pt = s.cd.decrypt(s.ct, s.cd.aggregate(wire))
    assert np.array_equal(s.enc.decode(pt), s.x.sum(0))


# ---- truncated and tampered bytes ------------------------------------------------------------
def patched(buf: bytes, offset: int, new: bytes) -> bytes:
    return buf[:offset] + new + buf[offset + len(new) :]


def lie(buf: bytes, offset: int, new: bytes) -> bytes:
    """`patched`, resealed: a consistent liar, so the field checks (not the checksum) decide."""
    return reseal(patched(buf, offset, new))


def frame(type_id: int, params: Parameters, body: bytes) -> bytes:
    """A complete, correctly checksummed frame around `body`."""
    head = HEADER.pack(MAGIC, FORMAT_VERSION, type_id, 0, params.fingerprint, len(body)) + body
    return head + checksum(head)


def test_plain_flip_is_caught_by_the_checksum():
    s = shares("TOY8")
    buf = to_bytes(s.shares["cks"])
    for at in (HEADER_BYTES, HEADER_BYTES + 40, len(buf) - CHECKSUM_BYTES - 1, len(buf) - 1):
        bad = bytearray(buf)
        bad[at] ^= 0x10
        with pytest.raises(SerializationError, match="fails its checksum"):
            from_bytes(s.p, bytes(bad))


@pytest.mark.parametrize("kind", ["ckg", "rkg-r2-agg", "pcks-agg"])
def test_truncated_share_raises(kind):
    s = shares("TOY8")
    buf = to_bytes(s.shares[kind])
    for cut in (0, 3, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 5, len(buf) - 1):
        with pytest.raises(SerializationError):
            from_bytes(s.p, buf[:cut])
    with pytest.raises(SerializationError, match="trailing"):
        from_bytes(s.p, buf + b"\x00")
    # a shorter body with a consistent length field and checksum: the shape needs more bytes
    body_len = len(buf) - FRAME_OVERHEAD - 1
    short = lie(
        buf[: -CHECKSUM_BYTES - 1] + bytes(CHECKSUM_BYTES),
        LENGTH_OFFSET,
        struct.pack("<I", body_len),
    )
    with pytest.raises(SerializationError, match="needs"):
        from_bytes(s.p, short)


def test_tampered_header_raises():
    s = shares("TOY8")
    buf = to_bytes(s.shares["cks"])
    cases = {
        "wrong magic": lie(buf, 0, b"XBFV"),
        "unknown format version 9": lie(buf, 4, b"\x09"),
        "unknown type id 99": lie(buf, 5, b"\x63"),
        "unknown flags 0x0001": lie(buf, 6, b"\x01\x00"),
        "truncated": lie(buf, LENGTH_OFFSET, struct.pack("<I", len(buf))),
    }
    for what, bad in cases.items():
        with pytest.raises(SerializationError, match=what):
            from_bytes(s.p, bad)
    with pytest.raises(SerializationError, match="expected DecryptionShare, got Ciphertext"):
        from_bytes(s.p, lie(buf, 5, bytes([7])), DecryptionShare)
    # the type id is the protocol: the same body under the KeySwitchShare id is a KeySwitchShare
    assert type(from_bytes(s.p, lie(buf, 5, bytes([40])))).__name__ == "KeySwitchShare"
    # ...and without a reseal, that same edit is only corruption
    with pytest.raises(SerializationError, match="KeySwitchShare frame fails its checksum"):
        from_bytes(s.p, patched(buf, 5, bytes([40])))


def test_frame_of_the_retired_untyped_share_is_refused():
    s = shares("TOY8")
    # what the previous format wrote for a CKS share: u8-length protocol name first
    old_body = bytes([3]) + b"cks" + bytes([1, 3, 0]) + bytes(32) + bytes(8) + bytes(64)
    with pytest.raises(SerializationError, match="type 32 is the retired untyped Share"):
        from_bytes(s.p, frame(32, s.p, old_body))


# body offsets of a DecryptionShare: level, digest, u32 peers, sender runs, active runs, batch
LEVEL, DIGEST, PEERS, SENDERS = 0, 1, 33, 37


def test_tampered_body_fields_raise():
    s = shares("TOY8")
    buf = to_bytes(s.shares["cks"])
    b = HEADER_BYTES
    assert buf[b + LEVEL] == s.ct.level and buf[b + DIGEST : b + PEERS] == s.shares["cks"].digest
    assert struct.unpack_from("<III", buf, b + PEERS) == (1, 1, 0)  # peers 1, one run (0, 1)
    runs = b + SENDERS
    last = len(buf) - CHECKSUM_BYTES - 4  # the last residue bytes, before the checksum
    bad = {  # error message expected -> the lie
        "share level 0 outside": lie(buf, b + LEVEL, b"\x00"),
        "share level 9 outside": lie(buf, b + LEVEL, b"\x09"),
        "declared shape needs": lie(buf, b + LEVEL, b"\x02"),  # level 2: the shape no longer fits
        "declared peers": lie(buf, b + PEERS, struct.pack("<I", MAX_PEERS + 1)),
        "highest id present": lie(buf, b + PEERS, struct.pack("<I", 2)),  # not the tight bound
        "beyond the declared 1 peers": lie(buf, runs + 4, struct.pack("<I", 1)),
        "2 runs in a peer set": lie(buf, runs, struct.pack("<I", 2)),
        r"run \(0, 0\) is empty": lie(buf, runs + 8, struct.pack("<I", 0)),
        "9 dimensions": lie(buf, runs + 12 + 4, b"\x09"),
        "coefficient >= modulus|nonzero padding": lie(buf, last, b"\xff\xff\xff\xff"),
    }
    for what, data in bad.items():
        with pytest.raises(SerializationError, match=what):
            from_bytes(s.p, data)
    # runs must be canonical: increasing, disjoint, non-adjacent
    agg = s.shares["ckg-agg-sparse"]  # senders {0}, {2}, {5, 6}: peers 7, 3 runs
    good = to_bytes(agg)
    at = HEADER_BYTES + 32 + 4
    assert struct.unpack_from("<7I", good, at) == (3, 0, 1, 2, 1, 5, 2)
    for what, runs_ in {
        "overlap": (0, 3, 2, 1, 5, 2),
        "adjacent": (0, 1, 1, 1, 5, 2),
        "out of order": (5, 2, 0, 1, 2, 1),
    }.items():
        with pytest.raises(SerializationError, match="run"):
            from_bytes(s.p, lie(good, at + 4, struct.pack("<6I", *runs_)))
            pytest.fail(what)


def test_peer_set_bomb_is_refused_before_expansion():
    """A 260-byte frame declaring 32 runs of 2^20 ids each (4.3 GB as a Python set)."""
    s = shares("TOY8")
    runs = struct.pack("<I", 32) + b"".join(struct.pack("<II", i << 20, 1 << 20) for i in range(32))
    payload = bytes(packed_size(s.p.q, s.p.n))  # a well-formed residue payload (zeros)
    for peers, tail, why in (
        ((1 << 32) - 1, b"", "declared peers"),
        (MAX_PEERS, b"", "beyond the declared"),  # every run is checked as it is read
        (MAX_PEERS, payload, "beyond the declared"),
    ):
        body = bytes(32) + struct.pack("<I", peers) + runs + struct.pack("<I", 0) + tail
        buf = frame(35, s.p, body)  # a PublicKeyShare frame
        assert len(buf) < 400 + len(tail)
        t0 = time.perf_counter()
        with pytest.raises(SerializationError, match=why):
            from_bytes(s.p, buf)
        assert time.perf_counter() - t0 < 0.5
    # one canonical run of all MAX_PEERS ids: more ids than 8 per byte of what follows, refused
    # before any set is built, with or without a well-formed payload
    for tail in (b"", payload):
        body = bytes(32) + struct.pack("<IIII", MAX_PEERS, 1, 0, MAX_PEERS) + struct.pack("<I", 0)
        with pytest.raises(SerializationError, match="per byte"):
            from_bytes(s.p, frame(35, s.p, body + tail))
    # within that bound (8 ids per payload byte) a large aggregate decodes, and only then
    many = 8 * len(payload)
    body = bytes(32) + struct.pack("<IIII", many, 1, 0, many) + struct.pack("<I", 0)
    back = from_bytes(s.p, frame(35, s.p, body + payload))
    assert back.senders == frozenset(range(many)) and to_bytes(back) == frame(
        35, s.p, body + payload
    )
    with pytest.raises(SerializationError, match="per byte"):
        to_bytes(dataclasses.replace(back, senders=frozenset(range(many + 1))))


def test_share_from_other_parameters_is_refused():
    s = shares("TOY8")
    other = Parameters(dataclasses.replace(PRESETS["TOY8"], t_bits=18, name="TOY8-t18"))
    assert other.n == s.p.n and other.q == s.p.q
    for obj in (s.shares["cks"], s.shares["gkg-agg"], s.shamir, s.tsk):
        buf = to_bytes(obj)
        with pytest.raises(SerializationError, match="other parameters"):
            from_bytes(other, buf)
        # header fingerprint swapped for the other set's: refused by the receiver of s.p
        forged = lie(buf, 8, other.fingerprint)
        with pytest.raises(SerializationError, match="other parameters"):
            from_bytes(s.p, forged)
    with pytest.raises(SerializationError, match="needs its Parameters"):
        from_bytes(None, to_bytes(s.shares["cks"]))


def test_tampered_digest_or_replayed_share_fails_to_combine():
    s = shares("TOY8")
    cd, good = s.cd, s.cks_shares
    buf = bytearray(to_bytes(good[1]))
    digest_at = HEADER_BYTES + DIGEST
    assert bytes(buf[digest_at : digest_at + 32]) == good[1].digest
    buf[digest_at] ^= 1
    forged = from_bytes(s.p, reseal(buf))  # the digest is data: it decodes...
    with pytest.raises(ShareMismatch, match="digest"):  # ...but does not combine
        cd.aggregate([good[0], forged, good[2]])
    with pytest.raises(ShareMismatch):
        cd.decrypt(s.ct, cd.aggregate([forged]))
    # a share for another ciphertext, replayed for this one
    stale = s.parties[1].decryption_share(cd, s.other_ct)
    with pytest.raises(ShareMismatch, match="digest"):
        cd.aggregate([good[0], from_bytes(s.p, to_bytes(stale)), good[2]])
    # the same share received twice
    again = from_bytes(s.p, to_bytes(good[0]))
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([good[0], good[1], again])
    # a sender set rewritten to claim the whole group: overlaps the genuine senders
    claim = lie(to_bytes(good[0]), HEADER_BYTES + PEERS, struct.pack("<IIII", K, 1, 0, K))
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([from_bytes(s.p, claim), good[1]])


# ---- compressed wire forms (types 42, 43) -----------------------------------------------------
@pytest.mark.parametrize("bits", [9, 32, 45, 70])
def test_compressed_forms_round_trip_and_still_decrypt(bits):
    from gpubfv.mhe.compressed import CompressedCiphertext, CompressedDecryptionShare

    s = shares("TOY8")
    small = CompressedCiphertext.compress(s.ct, bits)
    buf = to_bytes(small)
    assert buf[5] == 42  # the type id byte
    back = from_bytes(s.p, buf, CompressedCiphertext)
    assert (back.level, back.bits, back.batch_shape) == (small.level, bits, (2,))
    assert np.array_equal(back.c0, small.c0) and np.array_equal(back.c1, small.c1)
    assert to_bytes(back) == buf and len(buf) == nbytes(small)
    assert len(buf) < len(to_bytes(s.ct))  # c0 at `bits`, not at the modulus width
    cs = [CompressedDecryptionShare.compress(c, bits) for c in s.cks_shares]
    wire = [from_bytes(s.p, to_bytes(c), CompressedDecryptionShare) for c in cs]
    for a, b in zip(cs, wire, strict=True):
        assert (a.digest, a.senders, a.active_set, a.level, a.bits) == (
            b.digest, b.senders, b.active_set, b.level, b.bits,
        )  # fmt: skip
        assert np.array_equal(a.data, b.data)
    agg = wire[0].combine(wire[1]).combine(wire[2])
    if bits >= 32:  # TOY8: t of 17 bits; 2K roundings need a few bits more than t
        pt = s.cd.decrypt(back.lift(), agg.lift())
        assert np.array_equal(s.enc.decode(pt), s.x.sum(0))


def test_compressed_frames_refuse_bad_fields():
    from gpubfv.mhe.compressed import CompressedCiphertext, CompressedDecryptionShare

    s = shares("TOY8")
    buf = to_bytes(CompressedCiphertext.compress(s.ct, 40))
    body = HEADER_BYTES
    for bits in (0, 513, 0xFFFF):
        with pytest.raises(SerializationError, match="compressed width"):
            from_bytes(s.p, lie(buf, body + 1, struct.pack("<H", bits)))
    with pytest.raises(SerializationError, match="level"):
        from_bytes(s.p, lie(buf, body, bytes([9])))
    # the words are one bit stream per row (every pattern is a value): the width is in the size
    with pytest.raises(SerializationError, match="needs|holds"):
        from_bytes(s.p, lie(buf, body + 1, struct.pack("<H", 41)))  # another width, same bytes
    share = CompressedDecryptionShare.compress(s.cks_shares[0], 40)
    sbuf = to_bytes(share)
    with pytest.raises(SerializationError, match="compressed width"):
        from_bytes(s.p, lie(sbuf, body + 1, struct.pack("<H", 0)))
    with pytest.raises(SerializationError):
        from_bytes(s.p, lie(sbuf, body + 3 + 32, struct.pack("<I", 0xFFFFFFFF)))
    other = shares("TOY6")
    with pytest.raises(SerializationError, match="other parameters"):
        from_bytes(other.p, sbuf)
    with pytest.raises(ShareMismatch, match="twice"):
        share.combine(share)
