"""BFV scheme: decode(decrypt(f(enc(x)))) == f(x) mod t for every homomorphic operation."""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402

import gpubfv.context  # noqa: E402
from gpubfv import (  # noqa: E402
    PRNG,
    BatchEncoder,
    Ciphertext,
    CoefficientEncoder,
    Context,
    Decryptor,
    EncodingError,
    Encryptor,
    Evaluator,
    FixedPointEncoder,
    KeyGenerator,
    Parameters,
    ParametersLiteral,
    Plaintext,
    preset,
)
from gpubfv.ring.sampling import expand_uniform  # noqa: E402

EXAMPLES = int(os.environ.get("GPUBFV_EXAMPLES", "10"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
TOYS = ["TOY4", "TOY6", "TOY8"]
STEPS = [1, 2, 3, -1, -2, 5]


class Kit:
    """One key set and every scheme object for a parameter set (built once per session)."""

    def __init__(self, params: Parameters, seed: int = 1, steps: list[int] = STEPS) -> None:
        self.p = params
        self.ctx = ctx = Context(params)
        self.t = params.t
        self.n = params.n
        kg = KeyGenerator(ctx, prng=PRNG(bytes([seed]) * 32))
        self.sk = kg.gen_secret_key()
        self.pk = kg.gen_public_key(self.sk)
        self.rlk = kg.gen_relin_key(self.sk)
        self.gks = kg.gen_galois_keys(self.sk, steps=steps) if params.batching else None
        self.enc = BatchEncoder(ctx) if params.batching else CoefficientEncoder(ctx)
        self.e = Encryptor(ctx, self.pk, prng=PRNG(bytes([seed + 1]) * 32))
        self.es = Encryptor(ctx, self.sk, prng=PRNG(bytes([seed + 2]) * 32))
        self.d = Decryptor(ctx, self.sk)
        self.ev = Evaluator(ctx, self.rlk, self.gks)

    def encrypt(self, x: np.ndarray, symmetric: bool = False) -> Ciphertext:
        return (self.es if symmetric else self.e).encrypt(self.enc.encode(x))

    def decrypt(self, ct: Ciphertext) -> np.ndarray:
        return self.enc.decode(self.d.decrypt(ct))

    def rand(self, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> np.ndarray:
        h = (self.t - 1) // 2
        return rng.integers(-h, h + 1, batch + (self.n,))


@cache
def kit(name: str) -> Kit:
    return Kit(preset(name))


def cmod(x, t: int) -> np.ndarray:
    """Centered residue mod t of an integer array (object arithmetic: no int64 overflow)."""
    r = np.asarray(x, dtype=object) % t
    return np.where(r > t // 2, r - t, r).astype(np.int64)


def rot_rows(x: np.ndarray, steps: int) -> np.ndarray:
    h = x.shape[-1] // 2
    m = x.reshape(x.shape[:-1] + (2, h))
    return np.roll(m, -steps, axis=-1).reshape(x.shape)


def swap_rows(x: np.ndarray) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate([x[..., h:], x[..., :h]], axis=-1)


def eq(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


BATCHES = [(), (3,), (2, 2)]
BATCH_IDS = ["batch=1", "batch=3", "batch=2x2"]


def set_batch_params():
    return [pytest.param(n, b, id=f"{n}-{bi}") for n in TOYS for b, bi in zip(BATCHES, BATCH_IDS)]


# ---------------------------------------------------------------- linear operations


@pytest.mark.parametrize("name,batch", set_batch_params())
@pytest.mark.parametrize("symmetric", [False, True], ids=["pk", "sk"])
def test_encrypt_decrypt_roundtrip(name, batch, symmetric):
    k = kit(name)
    x = k.rand(np.random.default_rng(1), batch)
    ct = k.encrypt(x, symmetric)
    assert ct.batch_shape == batch and ct.size == 2 and ct.level == len(k.p.q)
    eq(k.decrypt(ct), x)


@pytest.mark.parametrize("name,batch", set_batch_params())
def test_linear_ops(name, batch):
    k, t = kit(name), kit(name).t
    rng = np.random.default_rng(2)
    x, y, z = k.rand(rng, batch), k.rand(rng, batch), k.rand(rng, batch)
    a, b = k.encrypt(x), k.encrypt(y, symmetric=True)
    ev, enc = k.ev, k.enc
    eq(k.decrypt(ev.add(a, b)), cmod(x + y, t))
    eq(k.decrypt(ev.sub(a, b)), cmod(x - y, t))
    eq(k.decrypt(ev.neg(a)), cmod(-x, t))
    eq(k.decrypt(ev.add_plain(a, enc.encode(z))), cmod(x + z, t))
    eq(k.decrypt(ev.sub_plain(a, enc.encode(z))), cmod(x - z, t))
    eq(k.decrypt(ev.mul_plain(a, enc.encode(z))), cmod(x.astype(object) * z, t))


@pytest.mark.parametrize("name", TOYS)
def test_plain_ops_broadcast_one_plaintext(name):
    k, t = kit(name), kit(name).t
    rng = np.random.default_rng(3)
    x, z = k.rand(rng, (3,)), k.rand(rng)
    a = k.encrypt(x)
    pz = k.enc.encode(z)
    eq(k.decrypt(k.ev.add_plain(a, pz)), cmod(x + z, t))
    eq(k.decrypt(k.ev.mul_plain(a, pz)), cmod(x.astype(object) * z, t))


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("count", [1, 4, 9], ids=lambda c: f"K={c}")
def test_sum_over_batch_and_list(name, count):
    k, t = kit(name), kit(name).t
    x = k.rand(np.random.default_rng(4), (count, 2))
    cts = k.encrypt(x)
    eq(k.decrypt(k.ev.sum(cts)), cmod(x.sum(axis=0), t))
    lst = [k.encrypt(x[i]) for i in range(count)]
    eq(k.decrypt(k.ev.sum(lst)), cmod(x.sum(axis=0), t))


# ---------------------------------------------------------------- multiplication


@pytest.mark.parametrize("name,batch", set_batch_params())
def test_mul_relinearize(name, batch):
    k, t = kit(name), kit(name).t
    rng = np.random.default_rng(5)
    x, y = k.rand(rng, batch), k.rand(rng, batch)
    a, b = k.encrypt(x), k.encrypt(y)
    prod = k.ev.mul(a, b)
    assert prod.size == 3
    want = cmod(x.astype(object) * y, t)
    eq(k.decrypt(prod), want)  # size-3 ciphertexts decrypt too
    rel = k.ev.relinearize(prod)
    assert rel.size == 2 and rel.batch_shape == batch
    eq(k.decrypt(rel), want)
    eq(k.decrypt(k.ev.multiply(a, b)), want)
    assert k.d.noise_budget(rel) > 0


@pytest.mark.parametrize("name", TOYS)
def test_mul_square_and_depth_two(name):
    k, t = kit(name), kit(name).t
    rng = np.random.default_rng(6)
    x, y, z = (rng.integers(-30, 31, k.n) for _ in range(3))
    a, b, c = k.encrypt(x), k.encrypt(y), k.encrypt(z)
    sq = k.ev.multiply(a, a)
    eq(k.decrypt(sq), cmod(x * x, t))
    xyz = k.ev.multiply(k.ev.multiply(a, b), c)
    if k.d.noise_budget(xyz) > 0:
        eq(k.decrypt(xyz), cmod(x * y * z, t))


def test_mul_at_lower_level_refused():
    k = kit("TOY8")
    a = k.ev.mod_switch_to(k.encrypt(k.rand(np.random.default_rng(0))), 2)
    with pytest.raises(ValueError):
        k.ev.mul(a, a)


# ---------------------------------------------------------------- rotations


@pytest.mark.parametrize("name,batch", set_batch_params())
@pytest.mark.parametrize("steps", STEPS, ids=lambda s: f"steps={s}")
def test_rotate_rows(name, batch, steps):
    k = kit(name)
    x = k.rand(np.random.default_rng(7), batch)
    eq(k.decrypt(k.ev.rotate_rows(k.encrypt(x), steps)), rot_rows(x, steps))


@pytest.mark.parametrize("name,batch", set_batch_params())
def test_rotate_columns(name, batch):
    k = kit(name)
    x = k.rand(np.random.default_rng(8), batch)
    ct = k.encrypt(x)
    eq(k.decrypt(k.ev.rotate_columns(ct)), swap_rows(x))
    # composition: rotate after a column swap after a multiplication
    y = k.rand(np.random.default_rng(9), batch)
    prod = k.ev.multiply(ct, k.encrypt(y))
    got = k.decrypt(k.ev.rotate_rows(k.ev.rotate_columns(prod), 1))
    eq(got, rot_rows(swap_rows(cmod(x.astype(object) * y, k.t)), 1))


def test_rotation_without_key_refused():
    k = kit("TOY6")
    with pytest.raises(KeyError):
        k.ev.rotate_rows(k.encrypt(k.rand(np.random.default_rng(0))), 7)
    with pytest.raises(ValueError):
        Evaluator(k.ctx).rotate_columns(k.encrypt(k.rand(np.random.default_rng(0))))
    with pytest.raises(ValueError):
        a = k.encrypt(k.rand(np.random.default_rng(0)))
        Evaluator(k.ctx).relinearize(k.ev.mul(a, a))


# ---------------------------------------------------------------- modulus switching


@pytest.mark.parametrize("name", TOYS)
def test_mod_switch_to(name):
    k, t = kit(name), kit(name).t
    L = len(k.p.q)
    rng = np.random.default_rng(10)
    x, y, z = k.rand(rng, (2,)), k.rand(rng, (2,)), k.rand(rng, (2,))
    a, b = k.encrypt(x), k.encrypt(y, symmetric=True)
    for level in range(L, 0, -1):
        a2, b2 = k.ev.mod_switch_to(a, level), k.ev.mod_switch_to(b, level)
        assert a2.level == level and a2.batch_shape == (2,)
        eq(k.decrypt(a2), x)
        eq(k.decrypt(k.ev.add(a2, b2)), cmod(x + y, t))
        eq(k.decrypt(k.ev.add_plain(a2, k.enc.encode(z))), cmod(x + z, t))
        if level >= 2:  # at one 28-30-bit prime a full-range plaintext product overflows Q
            eq(k.decrypt(k.ev.mul_plain(a2, k.enc.encode(z))), cmod(x.astype(object) * z, t))
    # from a product, and in two hops
    prod = k.ev.multiply(a, b)
    eq(k.decrypt(k.ev.mod_switch_to(k.ev.mod_switch_to(prod, L - 1), 1)), cmod(x * y, t))
    with pytest.raises(ValueError):
        k.ev.mod_switch_to(a, L + 1)
    with pytest.raises(ValueError):
        k.ev.mod_switch_to(a, 0)
    with pytest.raises(ValueError):
        k.ev.add(a, k.ev.mod_switch_to(b, 1))


# ---------------------------------------------------------------- secret-key ciphertexts


def test_secret_key_ciphertext_c1_is_seeded():
    k = kit("TOY6")
    x = k.rand(np.random.default_rng(11), (2, 2))
    ct = k.encrypt(x, symmetric=True)
    assert ct.seed is not None and len(ct.seed) == 32
    qb = k.ctx.q_basis()
    c1 = qb.intt(expand_uniform(ct.seed, ct.seed_domain, qb, (2, 2)))
    eq(ct.data[..., 1, :, :], c1)
    assert k.encrypt(x).seed is None
    assert k.ev.add(ct, ct).seed is None
    # two encryptions of the same values differ (fresh seed and noise)
    ct2 = k.encrypt(x, symmetric=True)
    assert ct2.seed != ct.seed and not np.array_equal(ct2.data, ct.data)


def test_context_is_the_handle():
    k = kit("TOY6")
    assert k.e.ctx is k.d.ctx is k.ev.ctx is k.enc.ctx is k.ctx
    assert Context(k.p, "cpu").backend is k.ctx.backend
    with pytest.raises(TypeError):
        Context(k.p.literal)
    with pytest.raises(TypeError):
        Context(k.p, 3)
    with pytest.raises(TypeError):
        KeyGenerator(k.p.literal)
    # objects built on a Context refuse keys of other parameters
    other = kit("TOY8")
    with pytest.raises(ValueError):
        Decryptor(other.ctx, k.sk)
    with pytest.raises(ValueError):
        Encryptor(other.ctx, k.pk)
    with pytest.raises(ValueError):
        Evaluator(other.ctx, k.rlk)
    with pytest.raises(ValueError):
        KeyGenerator(other.ctx).gen_public_key(k.sk)
    with pytest.raises(TypeError):
        Encryptor(k.ctx, k.rlk)
    with pytest.raises(TypeError):
        Encryptor(k.ctx, k.pk, PRNG(b"\x01" * 32))  # the PRNG goes by keyword
    with pytest.raises(TypeError):
        FixedPointEncoder(k.p, 4, 1.0)
    with pytest.raises(ValueError):
        FixedPointEncoder(k.ctx, 4, 1.0, inner=BatchEncoder(other.ctx))


def test_context_tables_die_with_it():
    """Per-level tables are memoised on the instance, not in a module-level cache."""
    ctx = Context(preset("TOY4"))
    assert ctx.q_basis(1) is ctx.q_basis(1) and ctx.decrypt_scaler(2) is ctx.decrypt_scaler(2)
    with pytest.raises(ValueError):
        ctx.q_basis(len(ctx.params.q) + 1)
    ref = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert ref() is None


def test_constructors_take_a_context_only():
    """The pre-Context `Cls(params, ..., backend=...)` form is refused with the fix named."""
    k = kit("TOY4")
    fix = r"build a gpubfv\.Context\(params, backend\) and pass it"
    for build in (
        lambda c: KeyGenerator(c),
        lambda c: Encryptor(c, k.pk),
        lambda c: Decryptor(c, k.sk),
        lambda c: Evaluator(c, k.rlk),
        lambda c: BatchEncoder(c),
        lambda c: CoefficientEncoder(c, pack=1),
        lambda c: FixedPointEncoder(c, 4, 1.0),
    ):
        assert build(k.ctx).ctx is k.ctx
        with pytest.raises(TypeError, match=fix):
            build(k.p)
    with pytest.raises(TypeError, match="Context"):
        Decryptor("cpu", k.sk)  # type: ignore[arg-type]
    assert not hasattr(gpubfv.context, "as_context")
    with pytest.raises(TypeError):
        Evaluator(k.ctx, backend="cpu")  # type: ignore[call-arg]


def test_encryptor_needs_a_key():
    with pytest.raises(TypeError):
        Encryptor(kit("TOY4").ctx, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- hypothesis: random inputs


@pytest.mark.parametrize("name", TOYS)
@PROPS
@given(seed=st.integers(0, 2**63 - 1), steps=st.sampled_from(STEPS))
def test_random_circuits(name, seed, steps):
    k, t = kit(name), kit(name).t
    rng = np.random.default_rng(seed)
    x, y, z = k.rand(rng, (2,)), k.rand(rng, (2,)), k.rand(rng, (2,))
    x[0, :3] = [(t - 1) // 2, -((t - 1) // 2), 0]
    a, b = k.encrypt(x), k.encrypt(y, symmetric=bool(seed & 1))
    ev = k.ev
    # (x*y + z) rotated, and (x - y) * z
    r = ev.rotate_rows(ev.add_plain(ev.multiply(a, b), k.enc.encode(z)), steps)
    eq(k.decrypt(r), rot_rows(cmod(x.astype(object) * y + z, t), steps))
    s = ev.mul_plain(ev.sub(a, b), k.enc.encode(z))
    eq(k.decrypt(s), cmod((x - y).astype(object) * z, t))


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", TOYS)
def test_batch_encoder_roundtrip_and_signedness(name):
    k, t = kit(name), kit(name).t
    x = k.rand(np.random.default_rng(12), (2, 3))
    pt = k.enc.encode(x)
    assert pt.data.dtype == np.uint64 and pt.data.shape == (2, 3, k.n)
    assert int(pt.data.max()) < t
    eq(k.enc.decode(pt), x)
    eq(k.enc.decode(pt, signed=False), x % t)
    eq(k.enc.decode(k.enc.encode(x % t)), x)  # [0, t) input accepted too
    # slots multiply: the encoding is a ring isomorphism
    y = k.rand(np.random.default_rng(13), (2, 3))
    py = k.enc.encode(y)
    prod = [
        reference.negacyclic_mul(pt.data[i, j].tolist(), py.data[i, j].tolist(), t)
        for i in range(2)
        for j in range(3)
    ]
    pprod = Plaintext(k.p, np.array(prod, dtype=np.uint64).reshape(2, 3, k.n))
    eq(k.enc.decode(pprod), cmod(x.astype(object) * y, t))


@pytest.mark.parametrize("name", TOYS)
def test_encode_out_of_range_refused(name):
    k, t = kit(name), kit(name).t
    z = np.zeros(k.n, dtype=np.int64)
    for bad in (t, -((t - 1) // 2) - 1, 2**40):
        v = z.copy()
        v[5] = bad
        with pytest.raises(EncodingError):
            k.enc.encode(v)
    with pytest.raises(EncodingError):
        k.enc.encode(np.zeros(k.n, dtype=np.float64))
    with pytest.raises(EncodingError):
        k.enc.encode(np.zeros(k.n - 1, dtype=np.int64))
    with pytest.raises(EncodingError):
        k.enc.encode(np.zeros(k.n + 1, dtype=np.int64))


FLOATS = [1.7, 1.0, float("nan"), float("inf"), -0.5]


@pytest.mark.parametrize("bad", FLOATS, ids=lambda v: f"v={v}")
@pytest.mark.parametrize("which", ["batch", "coeff", "coeff-packed"])
def test_integer_encoders_refuse_floats(which, bad):
    """Floats never reach an integer encoder, not even integer-valued ones (no silent casts)."""
    k = big_t_kit() if which == "coeff-packed" else kit("TOY6")
    if which == "batch":
        enc = BatchEncoder(k.ctx)
    else:
        enc = CoefficientEncoder(k.ctx, pack=3 if which == "coeff-packed" else 1, width=18)
    v = np.zeros(k.n, dtype=np.float64)
    v[3] = bad
    with pytest.raises(EncodingError, match="integer values required"):
        enc.encode(v)
    with pytest.raises(EncodingError):
        enc.encode([0, 1, bad] + [0] * (k.n - 3))  # a list with one float is a float array
    ints = np.zeros(k.n, dtype=np.int64)
    ints[3] = 1
    eq(enc.decode(enc.encode(ints))[: k.n], ints)  # the same values as integers are fine


def test_batch_encoder_needs_batching():
    p = Parameters(
        ParametersLiteral(log_n=4, q_bits=(28, 28), t=65539, batching=False, allow_insecure=True)
    )
    with pytest.raises(EncodingError):
        BatchEncoder(Context(p))


@pytest.mark.parametrize("name", ["TOY6", "TOY8"])
@pytest.mark.parametrize("f", [4, 8], ids=lambda f: f"f={f}")
def test_fixed_point_encoder(name, f):
    k, t = kit(name), kit(name).t
    clip = 3.0
    fp = FixedPointEncoder(k.ctx, scale_bits=f, clip=clip, inner=k.enc)
    assert fp.max_error == 2.0 ** -(f + 1)
    rng = np.random.default_rng(14)
    x = rng.uniform(-clip, clip, (3, k.n))
    x[0, :2] = [clip, -clip]
    back = fp.decode(k.d.decrypt(k.e.encrypt(fp.encode(x))))
    assert np.abs(back - x).max() <= fp.max_error
    # an encrypted sum of K quantized values is the sum of the quantized values, exactly
    cts = k.e.encrypt(fp.encode(x))
    total = fp.decode(k.d.decrypt(k.ev.sum(cts)))
    q = np.rint(x * 2.0**f) / 2.0**f
    np.testing.assert_allclose(total, q.sum(axis=0), rtol=0, atol=0)
    assert np.abs(total - x.sum(axis=0)).max() <= 3 * fp.max_error
    with pytest.raises(EncodingError):
        fp.encode(np.full(k.n, clip * 1.001))
    with pytest.raises(EncodingError):
        fp.encode(np.full(k.n, -clip * 1.5))
    with pytest.raises(EncodingError):
        FixedPointEncoder(k.ctx, scale_bits=f, clip=t / 2.0**f)


@cache
def big_t_kit() -> Kit:
    lit = ParametersLiteral(
        log_n=6,
        q_bits=(30, 30, 30, 30, 30),
        p_bits=(30, 30),
        t_bits=58,
        batching=False,
        allow_insecure=True,
        name="TOY6-t58",
    )
    return Kit(Parameters(lit), seed=9)


def test_coefficient_packing_sums_large_t():
    k = big_t_kit()
    assert k.t.bit_length() == 58
    ce = CoefficientEncoder(k.ctx, pack=3, width=18)
    assert ce.slots == 3 * k.n
    K = 4
    rng = np.random.default_rng(15)
    x = rng.integers(0, 1 << 16, (K, 3 * k.n))
    x[0, :2] = [(1 << 16) - 1, 0]
    pts = ce.encode(x)
    eq(ce.decode(pts), x)
    total = ce.decode(k.d.decrypt(k.ev.sum(k.e.encrypt(pts))))
    eq(total, x.sum(axis=0))
    # fewer values than slots: zero padded
    short = ce.encode(x[0, :10])
    eq(ce.decode(k.d.decrypt(k.e.encrypt(short)))[:10], x[0, :10])
    with pytest.raises(EncodingError):
        ce.encode(np.array([1 << 18]))
    with pytest.raises(EncodingError):
        ce.encode(np.array([-1]))
    with pytest.raises(EncodingError):
        ce.encode(np.zeros(3 * k.n + 1, dtype=np.int64))
    with pytest.raises(EncodingError):
        CoefficientEncoder(k.ctx, pack=4, width=15)  # 60 bits >= 58-bit t
    # any coefficient positions unpack to the decode's sub-values (pack 3 and pack 1)
    perm = rng.permutation(k.n)
    eq(ce.unpack_positions(pts.data[0][perm]), ce.decode(pts)[0].reshape(3, k.n)[:, perm])
    one = CoefficientEncoder(k.ctx, pack=1, width=18)
    pt1 = one.encode(x[0, : k.n])
    eq(one.unpack_positions(pt1.data[perm]), x[0, : k.n][perm].reshape(1, -1))


def test_coefficient_encoder_large_t_mul_plain_is_negacyclic():
    k = big_t_kit()
    t = k.t
    rng = np.random.default_rng(16)
    h = (t - 1) // 2
    x = np.array([int(v) for v in rng.integers(-h, h + 1, k.n)], dtype=np.int64)
    z = rng.integers(-1000, 1001, k.n)
    a = k.encrypt(x)
    assert k.decrypt(a).tolist() == x.tolist()
    got = k.decrypt(k.ev.mul_plain(a, k.enc.encode(z)))
    want = [reference.centered(v, t) for v in reference.negacyclic_mul(x.tolist(), z.tolist(), t)]
    assert got.tolist() == want
    b = k.encrypt(x, symmetric=True)
    want2 = [reference.centered(2 * v, t) for v in x.tolist()]
    assert k.decrypt(k.ev.add(a, b)).tolist() == want2


def test_coefficient_mul_relin_is_negacyclic():
    k = kit("TOY6")
    ce = CoefficientEncoder(k.ctx)
    rng = np.random.default_rng(17)
    x, y = rng.integers(-500, 501, k.n), rng.integers(-500, 501, k.n)
    a, b = k.e.encrypt(ce.encode(x)), k.e.encrypt(ce.encode(y))
    got = ce.decode(k.d.decrypt(k.ev.multiply(a, b)))
    want = [reference.centered(v, k.t) for v in reference.negacyclic_mul(x, y, k.t)]
    assert got.tolist() == want


# ---------------------------------------------------------------- foreign parameters


def test_foreign_parameters_refused():
    a, b = kit("TOY6"), kit("TOY8")
    x6 = a.rand(np.random.default_rng(0))
    ct6 = a.encrypt(x6)
    ct8 = b.encrypt(b.rand(np.random.default_rng(0)))
    with pytest.raises(ValueError):
        b.d.decrypt(ct6)
    with pytest.raises(ValueError):
        b.ev.add(ct8, ct6)
    with pytest.raises(ValueError):
        b.ev.neg(ct6)
    with pytest.raises(ValueError):
        b.e.encrypt(a.enc.encode(x6))
    with pytest.raises(ValueError):
        b.ev.mul_plain(ct8, a.enc.encode(x6))
    with pytest.raises(ValueError):
        b.ev.add_plain(ct8, a.enc.encode(x6))
    # same shape and sizes but other moduli: TOY6 with a different t
    lit = preset("TOY6").literal
    other = Parameters(ParametersLiteral(**{**lit.to_dict(), "t_bits": 18}))
    assert other.n == a.n and other.fingerprint != a.p.fingerprint
    with pytest.raises(ValueError):
        a.d.decrypt(Ciphertext(other, ct6.data))
    with pytest.raises(TypeError):
        a.d.decrypt(ct6.data)


def test_malformed_ciphertext_refused():
    k = kit("TOY4")
    ct = k.encrypt(k.rand(np.random.default_rng(0)))
    with pytest.raises(ValueError):
        k.d.decrypt(Ciphertext(k.p, ct.data.astype(np.uint64)))
    with pytest.raises(ValueError):
        k.d.decrypt(Ciphertext(k.p, ct.data[..., :8]))
    with pytest.raises(ValueError):
        k.ev.relinearize(ct)  # size 2


# ---------------------------------------------------------------- a realistic size


def test_pn13_size_end_to_end():
    """log_n = 13, 6 x 30-bit Q (the PN13 preset): encrypt, decrypt, add, mul + relin."""
    t0 = time.perf_counter()
    p = preset("PN13")
    k = Kit(p, seed=3, steps=[1])
    rng = np.random.default_rng(18)
    x, y = k.rand(rng, (2,)), k.rand(rng, (2,))
    a, b = k.encrypt(x), k.encrypt(y, symmetric=True)
    eq(k.decrypt(a), x)
    eq(k.decrypt(k.ev.add(a, b)), cmod(x + y, p.t))
    prod = k.ev.multiply(a, b)
    eq(k.decrypt(prod), cmod(x.astype(object) * y, p.t))
    eq(k.decrypt(k.ev.rotate_rows(prod, 1)), rot_rows(cmod(x.astype(object) * y, p.t), 1))
    assert k.d.noise_budget(prod) > 20
    assert time.perf_counter() - t0 < 60


def test_batch_indexing():
    k = kit("TOY6")
    x = k.rand(np.random.default_rng(19), (3, 2))
    ct = k.encrypt(x)
    assert len(ct) == 3 and ct[1].batch_shape == (2,)
    eq(k.decrypt(ct[1]), x[1])
    eq(k.decrypt(ct[2, 0]), x[2, 0])
    with pytest.raises(IndexError):
        k.encrypt(x[0, 0])[0]


def test_sum_of_single_ciphertext_is_itself_or_refused():
    k = kit("TOY6")
    x = k.rand(np.random.default_rng(20))
    ct = k.encrypt(x)
    try:
        s = k.ev.sum(ct)
    except ValueError:
        return  # a clear refusal is fine
    assert s.data.shape == ct.data.shape
    eq(k.decrypt(s), x)
