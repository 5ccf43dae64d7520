"""Hostile bytes against every core wire type: truncations, bit flips, resealed lies, huge counts.

Every case must end in SerializationError (or, for a self-consistent resealed mutation, in an
object that re-encodes to exactly those bytes), within 1 s and 64 MiB of traced allocation.
The objects are tiny (TOY4: N=16, L=3, K=1) so that every byte and every bit is tried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from gpubfv import (
    PRNG,
    BatchEncoder,
    Ciphertext,
    Context,
    Encryptor,
    Evaluator,
    KeyGenerator,
    Parameters,
)
from gpubfv import serialization as ser
from gpubfv.params import PRESETS, ParametersLiteral
from gpubfv.serialization import from_bytes, to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wirefuzz import FuzzReport, fuzz_frame  # noqa: E402

MAX_CASE_S = 1.0
MAX_PEAK = 64 << 20


@cache
def world() -> dict:
    p = Parameters(PRESETS["TOY4"])
    ctx = Context(p, "cpu")
    kg = KeyGenerator(ctx, prng=PRNG(b"\x11" * 32))
    sk = kg.gen_secret_key()
    pk = kg.gen_public_key(sk)
    rlk = kg.gen_relin_key(sk)
    enc = BatchEncoder(ctx)
    rng = np.random.default_rng(3)  # test data only
    pt = enc.encode(rng.integers(0, p.t, size=p.n))
    ptb = enc.encode(rng.integers(0, p.t, size=(2, p.n)))
    ct = Encryptor(ctx, pk, prng=PRNG(b"\x12" * 32)).encrypt(pt)
    seeded = Encryptor(ctx, sk, prng=PRNG(b"\x13" * 32)).encrypt(ptb)
    objs = {
        "params": p,
        "secret-key": sk,
        "public-key-seeded": pk,
        "public-key": dataclasses.replace(pk, seed=None),
        "switching-key-seeded": rlk,
        "switching-key": dataclasses.replace(rlk, seed=None),
        "galois-keys": kg.gen_galois_keys(sk, steps=[1], columns=False),
        "plaintext": pt,
        "plaintext-batched": ptb,
        "ciphertext": ct,
        "ciphertext-seeded-batched": seeded,
        "ciphertext-size3": Evaluator(ctx, relin_key=rlk).mul(ct, ct),
    }
    return {"params": p, "objs": objs, "batched": Ciphertext(p, np.array(seeded.data))}


TOTAL = FuzzReport()


def _check(name: str, report: FuzzReport) -> None:
    global TOTAL
    TOTAL = TOTAL.add(report)
    assert not report.failures, f"{name}: " + "\n".join(report.failures)
    assert report.worst_case_s < MAX_CASE_S, name
    assert report.worst_peak_bytes < MAX_PEAK, name
    assert report.cases > 8 * 100, name  # every bit of the frame at least


FRAMED = [
    "params",
    "secret-key",
    "public-key-seeded",
    "public-key",
    "switching-key-seeded",
    "switching-key",
    "galois-keys",
    "plaintext",
    "plaintext-batched",
    "ciphertext",
    "ciphertext-seeded-batched",
    "ciphertext-size3",
]


@pytest.mark.parametrize("name", FRAMED)
def test_fuzz_frame(name):
    w = world()
    obj = w["objs"][name]
    params = None if name == "params" else w["params"]
    expected = type(obj)

    def decode(b: bytes):
        return from_bytes(params, b, expected, allow_insecure=True)

    report = fuzz_frame(to_bytes(obj), decode, to_bytes, max_case_s=MAX_CASE_S)
    _check(name, report)


def _chunk_seal(b: bytes) -> bytes:
    """Independent restatement of the chunk trailer (BLAKE2b-64, its own personalisation)."""
    body = b[:-8]
    return body + hashlib.blake2b(body, digest_size=8, person=b"gpubfv-chunk-v2").digest()


@pytest.mark.parametrize("c1_only", [False, True], ids=["chunk-c0c1", "chunk-c1-only"])
def test_fuzz_ciphertext_chunk(c1_only):
    w = world()
    p, ct = w["params"], w["batched"]
    batch, level = ct.data.shape[:-3], ct.level

    def decode(b: bytes):
        return ser.ciphertext_from_body(p, b, batch, level, c1_only=c1_only)

    def encode(obj):
        return ser.ciphertext_body(obj, c1_only=c1_only)

    blob = encode(ct)
    assert _chunk_seal(blob) == blob
    report = fuzz_frame(blob, decode, encode, framed=False, seal=_chunk_seal)
    _check(f"chunk c1_only={c1_only}", report)


def test_driver_reports_what_it_must():
    """The driver itself: a leaky, crashing or lenient decoder is a failure, not a pass."""
    blob = bytes(range(16)) + bytes(8)

    def strict(b: bytes) -> bytes:
        if b != blob:
            raise ser.SerializationError("not the one blob")
        return b

    def seal(b: bytes) -> bytes:
        return b

    assert not fuzz_frame(blob, strict, bytes, framed=False, seal=seal).failures

    def crashes(b: bytes) -> bytes:
        if b != blob:
            raise IndexError("boom")
        return b

    report = fuzz_frame(blob, crashes, bytes, framed=False, seal=seal, max_failures=1)
    assert report.failures and "IndexError" in report.failures[0]

    def lenient(b: bytes) -> bytes:
        return blob  # any input "decodes" to the original object

    report = fuzz_frame(blob, lenient, bytes, framed=False, seal=seal, max_failures=1)
    assert report.failures and "without raising" in report.failures[0]

    def greedy(b: bytes) -> bytes:
        if b != blob:
            np.ones(9 << 20, dtype=np.uint64)  # 72 MiB, then refuse
            raise ser.SerializationError("refused too late")
        return b

    report = fuzz_frame(blob, greedy, bytes, framed=False, seal=seal, random_bodies=0, head_bytes=0)
    assert report.failures and "MiB" in report.failures[0]


# ---- the multiparty share types (gpubfv.mhe.wire) ----------------------------------------------
# TOY4 has three limbs (levels 1..3, D = 3 gadget digits); TINY, one limb and one digit, keeps the
# key-share frames small enough to cut at every byte and flip every bit.
TINY = ParametersLiteral(
    log_n=4, q_bits=(28,), p_bits=(28,), t_bits=17, allow_insecure=True, name="TOY4-L1"
)
SAMPLED_POSITIONS = 320  # byte offsets cut and flipped in the frames marked sampled below


@cache
def mhe_params(name: str) -> Parameters:
    return world()["params"] if name == "TOY4" else Parameters(TINY)


def mhe_share(kind: str, name: str):
    """One share of `kind` on parameter set `name`, with single, sparse and active peer sets.

    The codec is blind to what the residues mean, so reduced residues from a test RNG stand in
    for protocol output; the sets cover one id, several runs and a nonempty active set.
    """
    from gpubfv import mhe
    from gpubfv.mhe import compressed

    p = mhe_params(name)
    rng = np.random.default_rng(len(kind))  # test data only
    qp = p.q + p.p
    d = len(range(0, len(p.q), max(1, len(p.p))))

    def residues(shape: tuple[int, ...], moduli: tuple[int, ...]) -> np.ndarray:
        m = np.array(moduli, dtype=np.uint64).reshape(-1, 1)
        raw = rng.integers(0, 1 << 62, size=shape + (len(moduli), p.n), dtype=np.uint64)
        return (raw % m).astype(np.uint32)

    def words(shape: tuple[int, ...], bits: int) -> np.ndarray:
        widths = compressed.word_widths(bits)
        out = [rng.integers(0, 1 << w, size=shape + (p.n,), dtype=np.uint64) for w in widths]
        return np.stack(out, axis=-2).astype(np.uint32)

    def share(cls, shape, moduli, senders, active=(), **extra):
        return cls(
            params=p,
            digest=hashlib.sha256(kind.encode()).digest(),
            senders=frozenset(senders),
            active_set=frozenset(active),
            data=residues(shape, moduli),
            **extra,
        )

    level = len(p.q)
    makers = {
        "PublicKeyShare": lambda: share(mhe.PublicKeyShare, (), p.q, {0, 2, 5, 6}),
        "GaloisKeyShare": lambda: share(mhe.GaloisKeyShare, (d,), qp, {1}, galois=3),
        "RelinKeyShareRound1": lambda: share(mhe.RelinKeyShareRound1, (d, 2), qp, {0, 1, 2}),
        "RelinKeyShareRound2": lambda: share(mhe.RelinKeyShareRound2, (d, 2), qp, {4}, {1, 4}),
        "DecryptionShare": lambda: share(
            mhe.DecryptionShare, (), p.q[: level - 1], {3}, {1, 3}, level=level - 1
        ),
        "DecryptionShare-batched": lambda: share(
            mhe.DecryptionShare, (2,), p.q, {0, 1}, level=level
        ),
        "KeySwitchShare": lambda: share(mhe.KeySwitchShare, (), p.q[:1], {1}, level=1),
        "PublicKeySwitchShare": lambda: share(
            mhe.PublicKeySwitchShare, (2,), p.q[:1], {0, 2}, level=1
        ),
        "CompressedCiphertext": lambda: compressed.CompressedCiphertext(
            p, level - 1, 40, words((2,), 40), residues((2,), p.q[: level - 1])
        ),
        "CompressedDecryptionShare": lambda: compressed.CompressedDecryptionShare(
            params=p,
            digest=hashlib.sha256(kind.encode()).digest(),
            senders=frozenset({0, 2, 3}),
            active_set=frozenset({0, 2, 3, 5}),
            level=level,
            bits=17,
            data=words((), 17),
        ),
        "CompressedDecryptionShare-batched": lambda: compressed.CompressedDecryptionShare(
            params=p,
            digest=hashlib.sha256(kind.encode()).digest(),
            senders=frozenset({1}),
            level=1,
            bits=70,
            data=words((3,), 70),
        ),
        "ShamirShare": lambda: mhe.ShamirShare(p, 2, 3, residues((), qp)),
        "ThresholdSecretShare": lambda: mhe.ThresholdSecretShare(
            p, 1, frozenset({0, 1, 2, 7}), residues((), qp)
        ),
    }
    return makers[kind]()


# (kind, parameter set, sampled): every wire type of gpubfv.mhe once exhaustively on a small
# frame; the multi-digit and batched frames, several times larger, on sampled positions
MHE_CASES = [
    ("PublicKeyShare", "TOY4", False),
    ("GaloisKeyShare", "TINY", False),
    ("RelinKeyShareRound1", "TINY", False),
    ("RelinKeyShareRound2", "TINY", False),
    ("DecryptionShare", "TOY4", False),
    ("KeySwitchShare", "TOY4", False),
    ("PublicKeySwitchShare", "TOY4", False),
    ("ShamirShare", "TOY4", False),
    ("ThresholdSecretShare", "TOY4", False),
    ("GaloisKeyShare", "TOY4", True),
    ("RelinKeyShareRound1", "TOY4", True),
    ("DecryptionShare-batched", "TOY4", True),
    ("CompressedCiphertext", "TOY4", True),
    ("CompressedDecryptionShare", "TOY4", False),
    ("CompressedDecryptionShare-batched", "TOY4", True),
]


@pytest.mark.parametrize(("kind", "name", "sampled"), MHE_CASES)
def test_fuzz_mhe_frame(kind, name, sampled):
    p = mhe_params(name)
    obj = mhe_share(kind, name)
    expected = type(obj)
    blob = to_bytes(obj)

    def decode(b: bytes):
        return from_bytes(p, b, expected)

    report = fuzz_frame(
        blob,
        decode,
        to_bytes,
        max_case_s=MAX_CASE_S,
        max_positions=SAMPLED_POSITIONS if sampled else None,
    )
    print(
        f"\n{kind}/{name}: {len(blob)} B, {report.cases} cases, {report.seconds:.2f} s, worst "
        f"{report.worst_case_s * 1e3:.1f} ms, {report.worst_peak_bytes / 2**20:.2f} MiB"
    )
    assert report.exhaustive is not sampled, "a frame marked sampled must be larger than that"
    _check(f"{kind}/{name}", report)


def test_fuzz_totals():
    """Runs last in this file: the totals of every case above, core and mhe (shown with -s)."""
    if TOTAL.cases == 0:
        pytest.skip("run with the fuzz cases above")
    print(
        f"\nwire fuzz: {TOTAL.cases} cases, {TOTAL.decoded} resealed mutations decoded "
        f"canonically, {TOTAL.seconds:.1f} s, worst case {TOTAL.worst_case_s * 1e3:.1f} ms, "
        f"worst peak {TOTAL.worst_peak_bytes / 2**20:.2f} MiB"
    )
    assert TOTAL.worst_case_s < MAX_CASE_S and TOTAL.worst_peak_bytes < MAX_PEAK
