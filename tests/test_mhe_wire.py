"""Wire encodings of the multiparty share types: round trips, refusals of bad bytes, replays.

Every share type (a Share of each protocol and round, single-sender and aggregated; ShamirShare;
ThresholdSecretShare) goes through `to_bytes` / `from_bytes` and must come back with equal arrays
and fields. Truncated or tampered bytes raise SerializationError; a share with another
parameter set's fingerprint is refused; a share whose digest was altered decodes (the digest is
data) but does not combine with the shares it claims to belong to.
"""

from __future__ import annotations

import dataclasses
import struct
from functools import cache

import numpy as np
import pytest

from gpubfv import PRNG, BatchEncoder, Encryptor, Evaluator, KeyGenerator, Parameters, preset
from gpubfv.mhe import (
    CollectiveDecrypt,
    GaloisKeyGen,
    KeySwitch,
    NoiseEstimate,
    PublicKeyGen,
    PublicKeySwitch,
    RelinKeyGen,
    ShamirShare,
    Share,
    ShareMismatch,
    Thresholdizer,
    ThresholdSecretShare,
)
from gpubfv.params import PRESETS
from gpubfv.serialization import HEADER_BYTES, SerializationError, from_bytes, nbytes, to_bytes

K = 3
SETS = ["TOY6", "TOY8"]


class Shares:
    """One share (and one aggregate) of every kind, for K = 3 peers."""

    def __init__(self, name: str) -> None:
        self.p = p = preset(name)
        rng = [PRNG(bytes([i + 1]) * 32) for i in range(K)]
        sks = [KeyGenerator(p, prng=rng[i]).gen_secret_key() for i in range(K)]
        self.sks = sks
        out: dict[str, Share] = {}
        ckg = PublicKeyGen(p)
        crp = ckg.sample_crp(b"\x01" * 32)
        sh = [ckg.gen_share(sks[i], crp, i, rng[i]) for i in range(K)]
        out["ckg"], out["ckg-agg"] = sh[0], ckg.aggregate(sh)
        pk = ckg.finalize(out["ckg-agg"], crp, K)

        rkg = RelinKeyGen(p)
        rcrp = rkg.sample_crp(b"\x02" * 32)
        r1 = [rkg.gen_share_round1(sks[i], rcrp, i, rng[i]) for i in range(K)]
        agg1 = rkg.aggregate([s for _, s in r1])
        r2 = [rkg.gen_share_round2(sks[i], r1[i][0], agg1, i, rng[i]) for i in range(K)]
        out["rkg-r1"], out["rkg-r1-agg"] = r1[0][1], agg1
        out["rkg-r2"], out["rkg-r2-agg"] = r2[1], rkg.aggregate(r2)

        gkg = GaloisKeyGen(p)
        gcrp = gkg.sample_crp(b"\x03" * 32, 3)
        gs = [gkg.gen_share(sks[i], 3, gcrp, i, rng[i]) for i in range(K)]
        out["gkg"], out["gkg-agg"] = gs[2], gkg.aggregate(gs)

        enc = BatchEncoder(p)
        self.x = np.random.default_rng(3).integers(-50, 50, (K, 2, p.n))
        cts = [Encryptor(p, pk, prng=rng[i]).encrypt(enc.encode(self.x[i])) for i in range(K)]
        self.ct = Evaluator(p).sum(cts)  # a batch of 2 ciphertexts
        self.other_ct = Evaluator(p).sum(cts[:2])
        self.enc = enc
        noise = NoiseEstimate.fresh(p, K).summed(K)
        self.cd = cd = CollectiveDecrypt(p, noise, K)
        cs = [cd.gen_share(sks[i], self.ct, i, rng[i]) for i in range(K)]
        self.cks_shares = cs
        out["cks"], out["cks-agg"] = cs[0], cd.aggregate(cs)
        active = frozenset({1, 3})
        out["cks-active"] = cd.gen_share(sks[0], self.ct, 3, rng[0], active_set=active)
        ks = KeySwitch(p, noise, K)
        out["cks-switch"] = ks.gen_share(sks[1], self.ct, 1, sk_out=sks[2], prng=rng[1])

        kg = KeyGenerator(p, prng=PRNG(b"\x04" * 32))
        pk_r = kg.gen_public_key(kg.gen_secret_key())
        pcks = PublicKeySwitch(p, noise, K)
        ps = [pcks.gen_share(sks[i], pk_r, self.ct, i, rng[i]) for i in range(K)]
        out["pcks"], out["pcks-agg"] = ps[0], pcks.aggregate(ps)
        # an aggregate whose sender set is not one run: runs {0}, {2}, {5, 6}
        sparse = [ckg.gen_share(sks[i % K], crp, j, rng[i % K]) for i, j in enumerate([0, 2, 5, 6])]
        out["ckg-agg-sparse"] = ckg.aggregate(sparse)
        self.shares = out

        th = Thresholdizer(p, 2, [1, 2, 3])
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
FIELDS = ("protocol", "digest", "senders", "level", "basis", "active_set", "round")


def assert_same_share(a: Share, b: Share) -> None:
    for f in FIELDS:
        assert getattr(a, f) == getattr(b, f), f
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
    back = from_bytes(s.p, buf, Share)
    assert isinstance(back, Share)
    assert_same_share(share, back)
    assert to_bytes(back) == buf  # canonical


def test_share_fields_survive_where_they_matter():
    s = shares("TOY8")
    sh = s.shares
    assert sh["ckg-agg"].senders == frozenset({0, 1, 2})
    assert sh["ckg-agg-sparse"].senders == frozenset({0, 2, 5, 6})
    assert sh["rkg-r2"].round == 2 and sh["rkg-r2"].basis == "qp"
    assert sh["cks"].data.shape[:-2] == (2,)  # batched ciphertext: one share row block each
    back = from_bytes(s.p, to_bytes(sh["cks-active"]), Share)
    assert back.active_set == frozenset({1, 3}) and back.senders == frozenset({3})


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
    wire = [from_bytes(s.p, to_bytes(c), Share) for c in s.cks_shares]
    pt = s.cd.decrypt(s.ct, s.cd.aggregate(wire), K)
    assert np.array_equal(s.enc.decode(pt), s.x.sum(0))


# ---- truncated and tampered bytes ------------------------------------------------------------
def patched(buf: bytes, offset: int, new: bytes) -> bytes:
    return buf[:offset] + new + buf[offset + len(new) :]


@pytest.mark.parametrize("kind", ["ckg", "rkg-r2-agg", "pcks-agg"])
def test_truncated_share_raises(kind):
    s = shares("TOY8")
    buf = to_bytes(s.shares[kind])
    for cut in (0, 3, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 5, len(buf) - 1):
        with pytest.raises(SerializationError):
            from_bytes(s.p, buf[:cut], Share)
    with pytest.raises(SerializationError, match="trailing"):
        from_bytes(s.p, buf + b"\x00", Share)
    # a shorter body with a consistent length field: the declared shape needs more bytes
    body_len = len(buf) - HEADER_BYTES - 1
    short = patched(buf[:-1], HEADER_BYTES - 4, struct.pack("<I", body_len))
    with pytest.raises(SerializationError, match="needs"):
        from_bytes(s.p, short, Share)


def test_tampered_header_raises():
    s = shares("TOY8")
    buf = to_bytes(s.shares["cks"])
    cases = {
        "magic": patched(buf, 0, b"XBFV"),
        "version": patched(buf, 4, b"\x09"),
        "unknown type": patched(buf, 5, b"\x63"),
        "flags": patched(buf, 6, b"\x01\x00"),
        "length": patched(buf, HEADER_BYTES - 4, struct.pack("<I", len(buf))),
    }
    for what, bad in cases.items():
        with pytest.raises(SerializationError):
            from_bytes(s.p, bad, Share)
        assert what  # keep the name in the traceback
    with pytest.raises(SerializationError, match="expected Share"):
        from_bytes(s.p, patched(buf, 5, bytes([7])), Share)  # says Ciphertext


def test_tampered_body_fields_raise():
    s = shares("TOY8")
    buf = to_bytes(s.shares["cks"])
    b = HEADER_BYTES
    assert buf[b] == 3 and buf[b + 1 : b + 4] == b"cks"
    level_at, after = b + 5, b + 7
    bad = {
        "unknown protocol": patched(buf, b + 1, b"xyz"),
        "protocol name length": patched(buf, b, b"\x05"),
        "round": patched(buf, b + 4, b"\x03"),
        "level 0": patched(buf, level_at, b"\x00"),
        "level above L": patched(buf, level_at, b"\x09"),
        "level 2 (shape no longer fits)": patched(buf, level_at, b"\x02"),
        "basis": patched(buf, b + 6, b"\x02"),
        "sender runs": patched(buf, after + 32, struct.pack("<I", 1 << 20)),
        "empty run": patched(buf, after + 32 + 8, struct.pack("<I", 0)),
        "batch dims": patched(buf, after + 32 + 12 + 4, b"\x09"),
        "coefficient >= q": patched(buf, len(buf) - 4, b"\xff\xff\xff\xff"),
    }
    for what, data in bad.items():
        with pytest.raises(SerializationError):
            from_bytes(s.p, data, Share)
            pytest.fail(what)


def test_share_from_other_parameters_is_refused():
    s = shares("TOY8")
    other = Parameters(dataclasses.replace(PRESETS["TOY8"], t_bits=18, name="TOY8-t18"))
    assert other.n == s.p.n and other.q == s.p.q
    for obj in (s.shares["cks"], s.shares["gkg-agg"], s.shamir, s.tsk):
        buf = to_bytes(obj)
        with pytest.raises(SerializationError, match="other parameters"):
            from_bytes(other, buf)
        # header fingerprint swapped for the other set's: refused by the receiver of s.p
        forged = patched(buf, 8, other.fingerprint)
        with pytest.raises(SerializationError, match="other parameters"):
            from_bytes(s.p, forged)
    with pytest.raises(SerializationError, match="needs its Parameters"):
        from_bytes(None, to_bytes(s.shares["cks"]))


def test_tampered_digest_or_replayed_share_fails_to_combine():
    s = shares("TOY8")
    cd, good = s.cd, s.cks_shares
    buf = bytearray(to_bytes(good[1]))
    digest_at = HEADER_BYTES + 1 + 3 + 3
    assert bytes(buf[digest_at : digest_at + 32]) == good[1].digest
    buf[digest_at] ^= 1
    forged = from_bytes(s.p, bytes(buf), Share)  # the digest is data: it decodes...
    with pytest.raises(ShareMismatch, match="digest"):  # ...but does not combine
        cd.aggregate([good[0], forged, good[2]])
    with pytest.raises(ShareMismatch, match="another ciphertext"):
        cd.decrypt(s.ct, cd.aggregate([forged]))
    # a share for another ciphertext, replayed for this one
    stale = cd.gen_share(s.sks[1], s.other_ct, 1)
    with pytest.raises(ShareMismatch, match="digest"):
        cd.aggregate([good[0], from_bytes(s.p, to_bytes(stale), Share), good[2]])
    # the same share received twice
    again = from_bytes(s.p, to_bytes(good[0]), Share)
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([good[0], good[1], again])
    # a sender set rewritten to claim the whole group: overlaps the genuine senders
    runs_at = digest_at + 32
    claim = patched(to_bytes(good[0]), runs_at + 4, struct.pack("<II", 0, K))
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([from_bytes(s.p, claim, Share), good[1]])
