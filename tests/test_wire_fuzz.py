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
    Encryptor,
    Evaluator,
    KeyGenerator,
    Parameters,
)
from gpubfv import serialization as ser
from gpubfv.params import PRESETS
from gpubfv.serialization import from_bytes, to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wirefuzz import FuzzReport, fuzz_frame  # noqa: E402

MAX_CASE_S = 1.0
MAX_PEAK = 64 << 20


@cache
def world() -> dict:
    p = Parameters(PRESETS["TOY4"])
    kg = KeyGenerator(p, prng=PRNG(b"\x11" * 32))
    sk = kg.gen_secret_key()
    pk = kg.gen_public_key(sk)
    rlk = kg.gen_relin_key(sk)
    enc = BatchEncoder(p)
    rng = np.random.default_rng(3)  # test data only
    pt = enc.encode(rng.integers(0, p.t, size=p.n))
    ptb = enc.encode(rng.integers(0, p.t, size=(2, p.n)))
    ct = Encryptor(p, pk, prng=PRNG(b"\x12" * 32)).encrypt(pt)
    seeded = Encryptor(p, secret_key=sk, prng=PRNG(b"\x13" * 32)).encrypt(ptb)
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
        "ciphertext-size3": Evaluator(p, relin_key=rlk).mul(ct, ct),
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


def test_fuzz_totals():
    """Runs last in this file: the totals of every case above (shown with -rA or -s)."""
    if TOTAL.cases == 0:
        pytest.skip("run with the fuzz cases above")
    print(
        f"\nwire fuzz: {TOTAL.cases} cases, {TOTAL.decoded} resealed mutations decoded "
        f"canonically, {TOTAL.seconds:.1f} s, worst case {TOTAL.worst_case_s * 1e3:.1f} ms, "
        f"worst peak {TOTAL.worst_peak_bytes / 2**20:.2f} MiB"
    )
    assert TOTAL.worst_case_s < MAX_CASE_S and TOTAL.worst_peak_bytes < MAX_PEAK


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
