"""Wire encodings: one round-trip helper over every type, sizes, and refusal of bad bytes."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpubfv import (
    PRNG,
    BatchEncoder,
    Ciphertext,
    CoefficientEncoder,
    Context,
    Decryptor,
    Encryptor,
    Evaluator,
    GaloisKeys,
    KeyGenerator,
    Parameters,
    ParametersLiteral,
    Plaintext,
    PublicKey,
    SecretKey,
    SwitchingKey,
)
from gpubfv import serialization as ser
from gpubfv.params import PRESETS
from gpubfv.serialization import SerializationError, from_bytes, nbytes, to_bytes

SMALL_T = ParametersLiteral(
    log_n=6, q_bits=(29, 29, 29), p_bits=(29,), t_bits=17, allow_insecure=True
)
LARGE_T = ParametersLiteral(
    log_n=6, q_bits=(29, 29, 29), p_bits=(29,), t_bits=40, batching=False, allow_insecure=True
)
SETS = {"logN=6-L=3-K=1-t17": SMALL_T, "logN=6-L=3-K=1-t40-nobatch": LARGE_T}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def packed_bits_size(moduli, n, rows):
    """Independent size formula: every row of n values at bit_length bits, byte-padded."""
    return rows * sum(-(-n * int(q).bit_length() // 8) for q in moduli)


class World:
    def __init__(self, lit: ParametersLiteral) -> None:
        self.params = p = Parameters(lit)
        self.ctx = ctx = Context(p, "cpu")
        kg = KeyGenerator(ctx, prng=PRNG(b"\x01" * 32))
        self.sk = kg.gen_secret_key()
        self.pk = kg.gen_public_key(self.sk)
        self.rlk = kg.gen_relin_key(self.sk)
        self.gks = kg.gen_galois_keys(self.sk, steps=[1, -1]) if p.batching else None
        self.enc = BatchEncoder(ctx) if p.batching else CoefficientEncoder(ctx)
        rng = np.random.default_rng(7)  # test data only, not key material
        self.values = rng.integers(0, min(p.t, 1 << 20), size=(3, p.n))
        self.pt1 = self.enc.encode(self.values[0])
        self.ptb = self.enc.encode(self.values)
        pk_enc = Encryptor(ctx, self.pk, prng=PRNG(b"\x02" * 32))
        sk_enc = Encryptor(ctx, self.sk, prng=PRNG(b"\x03" * 32))
        self.ev = Evaluator(ctx, relin_key=self.rlk)
        low = 1 if p.t.bit_length() < 20 else 2
        self.cts = {
            "single": (pk_enc.encrypt(self.pt1), self.values[0]),
            "batched": (pk_enc.encrypt(self.ptb), self.values),
            "seeded": (sk_enc.encrypt(self.pt1), self.values[0]),
            "seeded-batched": (sk_enc.encrypt(self.ptb), self.values),
            # the lowest level that still holds t with room for the rounding noise
            "modswitched": (self.ev.mod_switch_to(pk_enc.encrypt(self.ptb), low), self.values),
        }
        if p.batching:
            a = pk_enc.encrypt(self.pt1)
            self.cts["size3-mul"] = (self.ev.mul(a, a), self.values[0] ** 2 % p.t)
        self.dec = Decryptor(ctx, self.sk)

    def decrypt(self, ct: Ciphertext) -> np.ndarray:
        return self.enc.decode(self.dec.decrypt(ct), signed=False)


@pytest.fixture(scope="module", params=list(SETS), ids=list(SETS))
def world(request):
    return World(SETS[request.param])


def arrays(obj):
    """Everything an object holds, as comparable host values."""
    if isinstance(obj, Parameters):
        return [obj.fingerprint, obj.to_literal_dict()]
    if isinstance(obj, GaloisKeys):
        return [sorted(obj.keys)] + [a for g in sorted(obj.keys) for a in arrays(obj.keys[g])]
    out = [np.asarray(obj.data), obj.data.dtype, obj.data.shape]
    for attr in ("seed", "galois", "label", "seed_domain"):
        if hasattr(obj, attr):
            out.append(getattr(obj, attr))
    return out


def assert_same(a, b):
    xa, xb = arrays(a), arrays(b)
    assert len(xa) == len(xb)
    for u, v in zip(xa, xb):
        if isinstance(u, np.ndarray):
            np.testing.assert_array_equal(u, v)
        else:
            assert u == v


def roundtrip(obj, params):
    """bytes -> object -> equal content; nbytes matches; re-encoding is byte-identical."""
    blob = to_bytes(obj)
    assert blob[:4] == b"GBFV" and blob[4] == 2
    assert len(blob) == nbytes(obj)
    back = from_bytes(params, blob, type(obj), allow_insecure=True)
    assert type(back) is type(obj)
    assert_same(obj, back)
    assert to_bytes(back) == blob
    return back


def all_objects(w: World):
    objs = {
        "params": w.params,
        "sk": w.sk,
        "pk": w.pk,
        "pk-unseeded": dataclasses.replace(w.pk, seed=None),
        "relin": w.rlk,
        "relin-unseeded": dataclasses.replace(w.rlk, seed=None),
        "pt": w.pt1,
        "pt-batched": w.ptb,
    }
    if w.gks is not None:
        objs["galois"] = w.gks
    objs.update({f"ct-{k}": ct for k, (ct, _) in w.cts.items()})
    return objs


def test_roundtrip_every_type(world):
    for name, obj in all_objects(world).items():
        back = roundtrip(obj, None if name == "params" else world.params)
        if isinstance(obj, Ciphertext):
            np.testing.assert_array_equal(world.decrypt(back), world.decrypt(obj))


def test_ciphertexts_decrypt_after_roundtrip(world):
    for name, (ct, expect) in world.cts.items():
        back = from_bytes(world.params, to_bytes(ct), Ciphertext)
        got = world.decrypt(back)
        assert np.array_equal(got, np.asarray(expect) % world.params.t), name


def test_keys_still_work_after_roundtrip(world):
    p = world.params
    sk = from_bytes(p, to_bytes(world.sk), SecretKey)
    pk = from_bytes(p, to_bytes(world.pk), PublicKey)
    ct = Encryptor(world.ctx, pk).encrypt(world.pt1)
    got = world.enc.decode(Decryptor(world.ctx, sk).decrypt(ct), signed=False)
    assert np.array_equal(got, world.values[0])
    if p.batching:
        rlk = from_bytes(p, to_bytes(world.rlk), SwitchingKey)
        ev = Evaluator(world.ctx, relin_key=rlk)
        out = world.decrypt(ev.relinearize(world.cts["size3-mul"][0]))
        assert np.array_equal(out, world.values[0] ** 2 % p.t)


def test_params_roundtrip_without_params():
    p = Parameters(LARGE_T)
    back = from_bytes(None, to_bytes(p), allow_insecure=True)
    assert back.fingerprint == p.fingerprint and (back.q, back.p, back.t) == (p.q, p.p, p.t)
    with pytest.raises(SerializationError, match="differ"):
        from_bytes(Parameters(SMALL_T), to_bytes(p))


def test_sizes(world):
    p = world.params
    n, q, qp = p.n, p.q, p.q + p.p
    h = ser.FRAME_OVERHEAD
    assert h == ser.HEADER_BYTES + 8
    ct, _ = world.cts["batched"]
    assert nbytes(ct) == h + 3 + 4 + packed_bits_size(q, n, 3 * 2)
    seeded, _ = world.cts["seeded-batched"]
    dom = len(seeded.seed_domain)
    assert nbytes(seeded) == h + 3 + 4 + 1 + dom + 32 + packed_bits_size(q, n, 3)
    assert nbytes(seeded) < 0.55 * nbytes(ct)
    low, _ = world.cts["modswitched"]
    assert low.level < len(q)
    assert nbytes(low) == h + 3 + 4 + packed_bits_size(q[: low.level], n, 3 * 2)
    assert nbytes(world.sk) == h + packed_bits_size(qp, n, 1)
    assert nbytes(world.pk) == h + 32 + packed_bits_size(q, n, 1)
    assert nbytes(world.ptb) == h + 1 + 4 + 3 * (-(-n * p.t.bit_length() // 8))
    # strictly below 32-bit words
    assert nbytes(ct) - h < ct.data.nbytes


def test_foreign_parameters_refused(world):
    other = Parameters(dataclasses.replace(SMALL_T, q_bits=(28, 28, 28)))
    ct, _ = world.cts["single"]
    with pytest.raises(SerializationError, match="ciphertext from other parameters"):
        from_bytes(other, to_bytes(ct))
    with pytest.raises(SerializationError, match="needs its Parameters"):
        from_bytes(None, to_bytes(ct))


def test_params_body_is_canonical():
    p = Parameters(SMALL_T)
    blob = to_bytes(p)
    body = _body(blob)
    for bad in (body.replace(b'"t_bits":0', b'"t_bits":17'), body.replace(b",", b", ")):
        with pytest.raises(SerializationError, match="canonical"):
            from_bytes(None, _with_body(blob, bad), allow_insecure=True)
    with pytest.raises(SerializationError, match="fingerprint"):
        from_bytes(
            None, _with_body(blob, _body(to_bytes(Parameters(LARGE_T)))), allow_insecure=True
        )


def test_backend_by_name(world):
    ct, _ = world.cts["seeded"]
    back = from_bytes(world.params, to_bytes(ct), Ciphertext, backend="cpu")
    np.testing.assert_array_equal(back.data, ct.data)


def test_wrong_expected_type(world):
    with pytest.raises(SerializationError, match="expected PublicKey, got SecretKey"):
        from_bytes(world.params, to_bytes(world.sk), PublicKey)


def test_header_errors(world):
    p = world.params
    blob = bytearray(to_bytes(world.cts["single"][0]))
    cases = {
        "magic": (0, ord("X")),
        "version": (4, 3),
        "type id": (5, 99),
        "flags": (6, 0x80),
    }
    for what, (i, v) in cases.items():
        bad = bytearray(blob)
        bad[i] = v
        with pytest.raises(SerializationError, match=what.split()[0]):
            from_bytes(p, bytes(bad))
    with pytest.raises(SerializationError, match="trailing"):
        from_bytes(p, bytes(blob) + b"\0")
    with pytest.raises(SerializationError, match="truncated"):
        from_bytes(p, bytes(blob[:-1]))
    with pytest.raises(SerializationError, match="truncated"):
        from_bytes(p, b"GBFV")


def _body(blob: bytes) -> bytes:
    return blob[ser.HEADER_BYTES : -ser.CHECKSUM_BYTES]


def _with_body(blob: bytes, body: bytes) -> bytes:
    """The frame with another body, length and checksum made consistent: what a sender that
    lies on purpose sends (the checksum is no MAC), so the field checks themselves are hit."""
    head = blob[: ser.LENGTH_OFFSET] + struct.pack("<I", len(body))
    return ser.reseal(head + body + bytes(ser.CHECKSUM_BYTES))


def test_shape_fields_checked(world):
    p = world.params
    ct, _ = world.cts["batched"]
    blob = to_bytes(ct)
    body = _body(blob)
    for field, value, msg in [(0, 4, "size"), (1, 9, "level"), (1, 0, "level"), (2, 9, "dim")]:
        bad = bytearray(body)
        bad[field] = value
        with pytest.raises(SerializationError, match=msg):
            from_bytes(p, _with_body(blob, bytes(bad)))
    # an absurd batch size is refused from the length, before any allocation
    bad = body[:3] + struct.pack("<I", 0xFFFFFFFF) + body[7:]
    with pytest.raises(SerializationError, match="declared shape"):
        from_bytes(p, _with_body(blob, bad))


def test_coefficient_out_of_range(world):
    p = world.params
    ct, _ = world.cts["single"]
    data = np.array(ct.data)
    data[1, 2, 5] = p.q[2]
    with pytest.raises(SerializationError, match="modulus"):
        to_bytes(Ciphertext(p, data))
    # bytes carrying q itself, packed at the same widths with a looser bound
    loose = [(1 << q.bit_length()) - 1 for q in p.q]
    forged = bytes([2, 3, 0]) + ser.pack_residues(data, loose)
    with pytest.raises(SerializationError, match="coefficient >= modulus"):
        from_bytes(p, _with_body(to_bytes(ct), forged))


def test_plaintext_out_of_range(world):
    p = world.params
    data = np.array(world.pt1.data)
    data[3] = p.t
    with pytest.raises(SerializationError, match="t="):
        to_bytes(Plaintext(p, data))
    forged = bytes([0]) + ser.pack_residues(data[None], [(1 << p.t.bit_length()) - 1], np.uint64)
    with pytest.raises(SerializationError, match="modulus"):
        from_bytes(p, _with_body(to_bytes(world.pt1), forged))


def test_seed_is_regenerated(world):
    ct, _ = world.cts["seeded"]
    back = from_bytes(world.params, to_bytes(ct))
    assert back.seed == ct.seed and back.seed_domain == "ct-sk"
    np.testing.assert_array_equal(back.data[1], ct.data[1])
    # a different domain label gives another c1: the label travels
    wrong = to_bytes(dataclasses.replace(ct, seed_domain="ct-sX"))
    assert not np.array_equal(from_bytes(world.params, wrong).data[1], ct.data[1])


@dataclasses.dataclass
class Share:
    """A stand-in for a gpubfv.mhe share type."""

    params: Parameters
    data: np.ndarray


def _enc_share(s):
    return ser.pack_residues(s.data, s.params.q)


def _dec_share(params, body, backend):
    return Share(params, ser.unpack_residues(body, params.q, params.n))


TEST_TYPE_ID = 255  # far from the ids gpubfv.mhe takes


def test_register_extension_type(world):
    enc, dec = _enc_share, _dec_share
    with pytest.raises(ValueError):
        ser.register(7, Share, enc, dec)
    ser.register(TEST_TYPE_ID, Share, enc, dec)
    ser.register(TEST_TYPE_ID, Share, enc, dec)  # idempotent
    with pytest.raises(ValueError):
        ser.register(TEST_TYPE_ID, dict, enc, dec)
    share = Share(world.params, np.array(world.cts["single"][0].data[0]))
    blob = to_bytes(share)
    assert blob[5] == TEST_TYPE_ID and nbytes(share) == len(blob)
    back = from_bytes(world.params, blob, Share)
    np.testing.assert_array_equal(back.data, share.data)
    with pytest.raises(SerializationError, match="packed array"):
        from_bytes(world.params, _with_body(blob, _body(blob)[:-1]))


def test_unserializable():
    with pytest.raises(SerializationError, match="no wire encoding"):
        to_bytes(object())


# ---- corruption properties (hypothesis) ----------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return World(SMALL_T)


def _blobs(w: World):
    objs = all_objects(w)
    return {k: to_bytes(v) for k, v in objs.items() if k not in ("galois",)}


@FAST
@given(data=st.data())
def test_header_corruption_always_raises(small, data):
    blobs = _blobs(small)
    name = data.draw(st.sampled_from(sorted(blobs)))
    blob = bytearray(blobs[name])
    i = data.draw(st.integers(0, ser.HEADER_BYTES - 1))
    v = data.draw(st.integers(0, 255).filter(lambda x: x != blob[i]))
    blob[i] = v
    params = None if name == "params" else small.params
    with pytest.raises(SerializationError):
        from_bytes(params, bytes(blob), allow_insecure=True)


@FAST
@given(data=st.data())
def test_truncation_always_raises(small, data):
    blobs = _blobs(small)
    blobs["galois"] = to_bytes(small.gks)
    name = data.draw(st.sampled_from(sorted(blobs)))
    blob = blobs[name]
    cut = data.draw(st.integers(0, len(blob) - 1))
    params = None if name == "params" else small.params
    with pytest.raises(SerializationError):
        from_bytes(params, blob[:cut], allow_insecure=True)


@FAST
@given(data=st.data())
def test_any_bit_flip_raises(small, data):
    """The checksum covers header and body: no single flipped bit decodes, anywhere."""
    blobs = _blobs(small)
    name = data.draw(st.sampled_from(sorted(blobs)))
    blob = bytearray(blobs[name])
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    params = None if name == "params" else small.params
    with pytest.raises(SerializationError):
        from_bytes(params, bytes(blob), allow_insecure=True)


# ---- format version 2: checksum, receiver-side security, handles, the chunk form -----------------
def _v1_frame(blob: bytes) -> bytes:
    """The same object as format version 1 wrote it: version byte 1, no checksum trailer."""
    return blob[:4] + b"\x01" + blob[5 : -ser.CHECKSUM_BYTES]


def test_version1_frame_refused_naming_both_versions(world):
    ct, _ = world.cts["single"]
    with pytest.raises(SerializationError, match=r"version 1 .*version 2"):
        from_bytes(world.params, _v1_frame(to_bytes(ct)))


def test_checksum_catches_body_corruption(world):
    blob = bytearray(to_bytes(world.cts["batched"][0]))
    blob[len(blob) // 2] ^= 0x10
    with pytest.raises(SerializationError, match="checksum"):
        from_bytes(world.params, bytes(blob))
    blob = bytearray(to_bytes(world.sk))
    blob[-1] ^= 1  # the checksum itself
    with pytest.raises(SerializationError, match="checksum"):
        from_bytes(world.params, bytes(blob))


def test_checksum_is_blake2b64_over_header_and_body(world):
    import hashlib

    blob = to_bytes(world.pk)
    want = hashlib.blake2b(blob[:-8], digest_size=8, person=b"gpubfv-frame-v2").digest()
    assert blob[-8:] == want
    assert ser.reseal(blob) == blob


def test_insecure_parameters_need_the_receivers_opt_in():
    p = Parameters(SMALL_T)
    blob = to_bytes(p)
    with pytest.raises(SerializationError, match="insecure"):
        from_bytes(None, blob)
    assert from_bytes(None, blob, allow_insecure=True).fingerprint == p.fingerprint
    assert from_bytes(p, blob) is p  # the receiver's own set: it opted in when it built it
    # N=1024 with a modulus chain past the 128-bit bound, flagged insecure by its sender
    big = ParametersLiteral(
        log_n=10, q_bits=(30,) * 4, p_bits=(30,), t_bits=17, allow_insecure=True
    )
    with pytest.raises(SerializationError, match="insecure"):
        from_bytes(None, to_bytes(Parameters(big)))


def test_secure_preset_decodes_without_opt_in():
    p = Parameters(PRESETS["PN12"])
    back = from_bytes(None, to_bytes(p))
    assert back.fingerprint == p.fingerprint and not back.insecure


def test_preset_name_with_other_values_refused():
    # a tiny set that calls itself PN13: the name promises a 128-bit set, the values do not
    fake = Parameters(
        dataclasses.replace(SMALL_T, log_n=2, q_bits=(28, 28), p_bits=(28,), name="PN13")
    )
    with pytest.raises(SerializationError, match="insecure"):
        from_bytes(None, to_bytes(fake))
    with pytest.raises(SerializationError, match="not the preset"):
        from_bytes(None, to_bytes(fake), allow_insecure=True)
    # a secure set under a preset's name, but another t: refused as well
    other_t = Parameters(dataclasses.replace(PRESETS["PN12"], t_bits=21))
    with pytest.raises(SerializationError, match="not the preset"):
        from_bytes(None, to_bytes(other_t))


def test_parameter_bit_sizes_are_not_canonical():
    p = Parameters(PRESETS["PN12"])
    blob = to_bytes(p)
    lit = json.loads(_body(blob))
    lit.update(q=[], q_bits=[27, 27, 27])
    bad = json.dumps(lit, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(SerializationError, match="canonical"):
        from_bytes(None, _with_body(blob, bad))


def test_too_many_moduli_refused_before_primality_tests():
    p = Parameters(PRESETS["PN12"])
    blob = to_bytes(p)
    lit = json.loads(_body(blob))
    lit["q"] = [3] * (ser.MAX_MODULI + 1)
    bad = json.dumps(lit, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(SerializationError, match="list of"):
        from_bytes(None, _with_body(blob, bad))


def test_context_as_first_argument(world):
    ctx = Context(world.params, "cpu")
    for name in ("ct-seeded", "pk", "relin", "galois"):
        obj = all_objects(world).get(name)
        if obj is None:
            continue
        assert_same(from_bytes(ctx, to_bytes(obj)), obj)
    assert from_bytes(ctx, to_bytes(world.sk), SecretKey, "cpu").params is world.params
    with pytest.raises(ValueError, match="conflicts"):
        from_bytes(ctx, to_bytes(world.sk), backend="cuda")
    with pytest.raises(TypeError, match="Context"):
        from_bytes(object(), to_bytes(world.sk))


def test_galois_keys_must_be_in_increasing_order(world):
    if world.gks is None:
        pytest.skip("no Galois keys without batching")
    blob = to_bytes(world.gks)
    body = _body(blob)
    count = struct.unpack_from("<I", body)[0]
    entries, pos = [], 4
    for _ in range(count):
        size = struct.unpack_from("<I", body, pos)[0]
        entries.append(body[pos : pos + 4 + size])
        pos += 4 + size
    swapped = body[:4] + b"".join(reversed(entries))
    with pytest.raises(SerializationError, match="increasing"):
        from_bytes(world.params, _with_body(blob, swapped))
    huge = struct.pack("<I", world.params.n + 1) + body[4:]
    with pytest.raises(SerializationError, match="at most"):
        from_bytes(world.params, _with_body(blob, huge))


@pytest.mark.parametrize("c1_only", [False, True], ids=["c0c1", "c1-only"])
def test_ciphertext_chunk_roundtrip(world, c1_only):
    p = world.params
    for name in ("batched", "modswitched"):
        ct, _ = world.cts[name]
        flat = Ciphertext(p, np.array(ct.data))  # the chunk form drops the seed
        batch, level = ct.data.shape[:-3], ct.level
        body = ser.ciphertext_body(flat, c1_only=c1_only)
        assert len(body) == ser.ciphertext_body_size(p, batch, level, c1_only)
        comps = 1 if c1_only else 2
        assert len(body) == packed_bits_size(p.q[:level], p.n, 3 * comps) + 8
        back = ser.ciphertext_from_body(p, body, batch, level, c1_only=c1_only)
        np.testing.assert_array_equal(back.data[..., 1, :, :], ct.data[..., 1, :, :])
        if c1_only:
            assert not np.asarray(back.data[..., 0, :, :]).any()
        else:
            np.testing.assert_array_equal(back.data, ct.data)
            assert np.array_equal(world.decrypt(back), world.decrypt(ct))
        ctx = Context(p, "cpu")
        again = ser.ciphertext_from_body(ctx, body, batch, level, c1_only=c1_only)
        np.testing.assert_array_equal(again.data, back.data)


def test_ciphertext_chunk_refusals(world):
    p = world.params
    ct, _ = world.cts["batched"]
    body = ser.ciphertext_body(ct)
    with pytest.raises(SerializationError, match="needs"):
        ser.ciphertext_from_body(p, body[:-1], (3,), ct.level)
    with pytest.raises(SerializationError, match="needs"):
        ser.ciphertext_from_body(p, body, (4,), ct.level)  # another batch than was sent
    with pytest.raises(SerializationError, match="level"):
        ser.ciphertext_from_body(p, body, (3,), 0)
    with pytest.raises(SerializationError, match="implausibly"):
        ser.ciphertext_from_body(p, body, (1 << 20, 1 << 20), ct.level)
    bad = bytearray(body)
    bad[5] ^= 4
    with pytest.raises(SerializationError, match="checksum"):
        ser.ciphertext_from_body(p, bytes(bad), (3,), ct.level)
    with pytest.raises(SerializationError, match="size 2"):
        ser.ciphertext_body(world.cts["size3-mul"][0] if p.batching else _size3(world))


def _size3(w: World) -> Ciphertext:
    data = np.zeros((3, len(w.params.q), w.params.n), dtype=np.uint32)
    return Ciphertext(w.params, data)


def test_private_field_aliases_are_gone():
    """The field helpers are public (`text_field`, ...); the old `_`-aliases no longer exist."""
    for name in ("any_host", "batch_field", "check_array", "seed_field", "text_field"):
        assert name in ser.__all__ and callable(getattr(ser, name))
        assert not hasattr(ser, "_" + name), name


def test_fixed_width_words_pack_exactly_and_canonically():
    from gpubfv.serialization import bits_size, pack_bits, unpack_bits

    rng = np.random.default_rng(11)  # test data only
    widths = (32, 32, 5)
    a = np.stack([rng.integers(0, 1 << w, size=(2, 3), dtype=np.uint64) for w in widths], -2)
    a = a.astype(np.uint32)  # (2, 3 words, 3 values)
    buf = pack_bits(a, widths)
    assert len(buf) == bits_size(widths, 3, (2,)) == 2 * (12 + 12 + 2)
    assert np.array_equal(unpack_bits(buf, widths, 3, (2,)), a)
    bad = a.copy()
    bad[0, 2, 0] = 32  # beyond 5 bits
    with pytest.raises(ser.SerializationError, match="width"):
        pack_bits(bad, widths)
    last = bytearray(buf)
    last[-1] |= 0x80  # 3 x 5 bits leave one padding bit in the row's last byte
    with pytest.raises(ser.SerializationError, match="padding"):
        unpack_bits(bytes(last), widths, 3, (2,))
    with pytest.raises(ser.SerializationError, match="need"):
        unpack_bits(buf[:-1], widths, 3, (2,))
    for w in ((0,), (33,), ()):
        with pytest.raises(ser.SerializationError, match="widths"):
            pack_bits(a[..., :1, :], w)
