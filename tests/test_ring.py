"""Ring layer (RNSBasis, basis conversion, scale-and-round) against Python-int references."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402

from gpubfv import preset  # noqa: E402
from gpubfv.context import Context  # noqa: E402
from gpubfv.ring.basis import RNSBasis  # noqa: E402
from gpubfv.ring.modmath import generate_ntt_primes  # noqa: E402
from gpubfv.ring.rns import BaseConverter, HPSScaler, ScaleRoundToT  # noqa: E402

# GPUBFV_EXAMPLES=500 for a deeper bug hunt
EXAMPLES = int(os.environ.get("GPUBFV_EXAMPLES", "20"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**63 - 1)

# (logN, bit sizes): small rings so that schoolbook references stay fast
BASES = [(4, (28, 28, 28)), (6, (29, 29, 29, 29)), (5, (30,)), (6, (30, 30, 25, 30, 30))]
BASIS_IDS = [f"logN={ln}-L={len(b)}" for ln, b in BASES]


def make_basis(log_n: int, bits: tuple[int, ...], avoid: tuple[int, ...] = ()) -> RNSBasis:
    n = 1 << log_n
    return RNSBasis(generate_ntt_primes(list(bits), n, set(avoid)), n)


def rand_residues(rng: np.random.Generator, basis: RNSBasis, batch: tuple[int, ...] = ()):
    rows = [rng.integers(0, q, batch + (basis.n,)) for q in basis.moduli]
    return np.ascontiguousarray(np.stack(rows, axis=-2).astype(np.uint32))


def rand_ints(rng: np.random.Generator, lo: int, hi: int, count: int) -> list[int]:
    """count uniform Python ints in [lo, hi) (big integers: from random bytes)."""
    span = hi - lo
    nbytes = (span.bit_length() + 71) // 8
    raw = rng.bytes(nbytes * count)
    return [
        lo + int.from_bytes(raw[i * nbytes : (i + 1) * nbytes], "little") % span
        for i in range(count)
    ]


def residues_of(values: list[int], basis: RNSBasis) -> np.ndarray:
    return np.array(reference.to_residues(values, basis.moduli), dtype=np.uint32)


def as_lists(a: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in row] for row in a]


# ---------------------------------------------------------------- NTT


@pytest.mark.parametrize("log_n,bits", BASES, ids=BASIS_IDS)
@PROPS
@given(seed=SEEDS)
def test_ntt_product_is_negacyclic_schoolbook(log_n, bits, seed):
    rng = np.random.default_rng(seed)
    b = make_basis(log_n, bits)
    x, y = rand_residues(rng, b), rand_residues(rng, b)
    prod = b.intt(b.mul(b.ntt(x), b.ntt(y)))
    for l, q in enumerate(b.moduli):
        assert as_lists(prod[l : l + 1])[0] == reference.negacyclic_mul(
            as_lists(x[l : l + 1])[0], as_lists(y[l : l + 1])[0], q
        )


@pytest.mark.parametrize("log_n,bits", BASES, ids=BASIS_IDS)
@PROPS
@given(seed=SEEDS)
def test_ntt_matches_direct_evaluation_and_inverts(log_n, bits, seed):
    rng = np.random.default_rng(seed)
    b = make_basis(log_n, bits)
    x = rand_residues(rng, b, (2, 3))
    fx = b.ntt(x)
    assert fx.shape == x.shape and not np.shares_memory(fx, x)
    np.testing.assert_array_equal(b.intt(fx), x)
    psi = b.ntt_tables.psi
    for l, q in enumerate(b.moduli):
        assert as_lists(fx[1, 2, l : l + 1])[0] == reference.ntt_reference(
            as_lists(x[1, 2, l : l + 1])[0], q, psi[l]
        )
    y = x.copy()
    assert b.ntt(y, inplace=True) is y
    np.testing.assert_array_equal(y, fx)


# ---------------------------------------------------------------- element-wise


@pytest.mark.parametrize("log_n,bits", BASES, ids=BASIS_IDS)
@PROPS
@given(seed=SEEDS)
def test_elementwise_ops(log_n, bits, seed):
    rng = np.random.default_rng(seed)
    b = make_basis(log_n, bits)
    x, y, z = (rand_residues(rng, b, (3,)) for _ in range(3))
    one = rand_residues(rng, b)  # broadcast operand (a key)
    q = np.array(b.moduli, dtype=object)[:, None]
    X, Y, Z, O = (a.astype(object) for a in (x, y, z, one))
    np.testing.assert_array_equal(b.add(x, y).astype(object), (X + Y) % q)
    np.testing.assert_array_equal(b.sub(x, y).astype(object), (X - Y) % q)
    np.testing.assert_array_equal(b.neg(x).astype(object), (-X) % q)
    np.testing.assert_array_equal(b.mul(x, y).astype(object), (X * Y) % q)
    np.testing.assert_array_equal(b.mul(x, one).astype(object), (X * O) % q)
    np.testing.assert_array_equal(b.add(x, one).astype(object), (X + O) % q)
    acc = z.copy()
    assert b.mul_add(x, y, acc) is acc
    np.testing.assert_array_equal(acc.astype(object), (Z + X * Y) % q)
    scal = [int(v) for v in rng.integers(-(2**62), 2**62, len(b))]
    S = np.array(scal, dtype=object)[:, None]
    np.testing.assert_array_equal(b.mul_scalar(x, scal).astype(object), (X * S) % q)
    np.testing.assert_array_equal(b.sum(x).astype(object), X.sum(axis=0) % q)
    out = np.empty_like(x)
    assert b.add(x, y, out=out) is out
    for a in (b.add(x, y), b.sub(x, y), b.mul(x, y), b.neg(x)):
        assert a.dtype == np.uint32 and a.shape == x.shape


def test_elementwise_edge_values():
    b = make_basis(4, (30, 30))
    q = np.array(b.moduli, dtype=np.uint32)[:, None]
    top = np.broadcast_to(q - 1, (len(b), b.n)).astype(np.uint32).copy()
    zero = np.zeros_like(top)
    Q = np.array(b.moduli, dtype=object)[:, None]
    np.testing.assert_array_equal(b.add(top, top).astype(object), (2 * top.astype(object)) % Q)
    np.testing.assert_array_equal(b.mul(top, top), np.ones_like(top))  # (-1)^2
    np.testing.assert_array_equal(b.neg(zero), zero)
    np.testing.assert_array_equal(b.sub(zero, top), np.ones_like(top))


def test_shape_mismatch_refused():
    b = make_basis(4, (28, 28, 28))
    with pytest.raises(ValueError):
        b.add(np.zeros((2, 16), np.uint32), np.zeros((2, 16), np.uint32))
    with pytest.raises(ValueError):
        b.ntt(np.zeros((3, 32), np.uint32))


@pytest.mark.parametrize("log_n,bits", BASES[:2], ids=BASIS_IDS[:2])
@PROPS
@given(seed=SEEDS)
def test_from_signed(log_n, bits, seed):
    rng = np.random.default_rng(seed)
    b = make_basis(log_n, bits)
    x = rng.integers(-(2**63), 2**63 - 1, (2, b.n), dtype=np.int64, endpoint=True)
    x[0, :4] = [-(2**63), 2**63 - 1, -1, 0]
    x[1] = rng.integers(-21, 22, b.n)
    r = b.from_signed(x)
    assert r.shape == (2, len(b), b.n) and r.dtype == np.uint32
    for m in range(2):
        assert as_lists(r[m]) == reference.to_residues(x[m].tolist(), b.moduli)


@pytest.mark.parametrize("log_n,bits", BASES[:2], ids=BASIS_IDS[:2])
@PROPS
@given(seed=SEEDS, k=st.integers(0, 1 << 20))
def test_automorphism(log_n, bits, seed, k):
    rng = np.random.default_rng(seed)
    b = make_basis(log_n, bits)
    g = (2 * k + 1) % (2 * b.n)
    x = rand_residues(rng, b, (2,))
    y = b.automorphism(x, g)
    for m in range(2):
        for l, q in enumerate(b.moduli):
            assert as_lists(y[m, l : l + 1])[0] == reference.automorphism_reference(
                as_lists(x[m, l : l + 1])[0], g, q
            )
    # a ring homomorphism: sigma(x*y) = sigma(x)*sigma(y)
    z = rand_residues(rng, b, (2,))
    lhs = b.automorphism(b.intt(b.mul(b.ntt(x), b.ntt(z))), g)
    rhs = b.intt(b.mul(b.ntt(b.automorphism(x, g)), b.ntt(b.automorphism(z, g))))
    np.testing.assert_array_equal(lhs, rhs)


@pytest.mark.parametrize("g", [0, 2, 32, 33, -1])
def test_automorphism_refuses_bad_element(g):
    b = make_basis(4, (28,))
    with pytest.raises(ValueError):
        b.automorphism(np.zeros((1, 16), np.uint32), g)


# ---------------------------------------------------------------- basis conversion

# (logN, source bits, target bits)
CONVERSIONS = [
    (4, (28, 28, 28), (30, 30, 30, 30)),
    (5, (30, 30, 30, 30, 30, 30), (29, 29)),
    (4, (30,), (28, 28)),
    (6, (27, 30), (30, 30, 30, 30, 30)),
]
CONV_IDS = [f"logN={ln}-Lsrc={len(s)}-Ldst={len(d)}" for ln, s, d in CONVERSIONS]


def converter(log_n, src_bits, dst_bits) -> BaseConverter:
    src = make_basis(log_n, src_bits)
    dst = make_basis(log_n, dst_bits, avoid=src.moduli)
    return BaseConverter(src, dst)


def near_half(num: int, den: int, bits: int = 30) -> bool:
    """num/den within 2^-bits of a half-integer (float rounding may go either way there)."""
    r = num % den
    return abs(2 * r - den) * (1 << bits) < 2 * den


@pytest.mark.parametrize("log_n,src_bits,dst_bits", CONVERSIONS, ids=CONV_IDS)
@PROPS
@given(seed=SEEDS)
def test_base_convert_exact_is_centered_crt(log_n, src_bits, dst_bits, seed):
    conv = converter(log_n, src_bits, dst_bits)
    src, dst = conv.src, conv.dst
    rng = np.random.default_rng(seed)
    Q = src.product
    xs = rand_ints(rng, 0, Q, 3 * src.n)
    # extremes of the centered range and the values next to zero
    xs[:4] = [0, 1, Q - 1, Q // 2]
    xs = [v if not near_half(v, Q) else v // 3 for v in xs]
    x = np.stack([residues_of(xs[m * src.n : (m + 1) * src.n], src) for m in range(3)])
    out = conv(x, exact=True)
    assert out.shape == (3, len(dst), dst.n) and out.dtype == np.uint32
    for m in range(3):
        vals = xs[m * src.n : (m + 1) * src.n]
        want = reference.to_residues([reference.centered(v, Q) for v in vals], dst.moduli)
        assert as_lists(out[m]) == want


@pytest.mark.parametrize("log_n,src_bits,dst_bits", CONVERSIONS, ids=CONV_IDS)
@PROPS
@given(seed=SEEDS)
def test_base_convert_fast_is_off_by_small_multiple(log_n, src_bits, dst_bits, seed):
    conv = converter(log_n, src_bits, dst_bits)
    src, dst = conv.src, conv.dst
    rng = np.random.default_rng(seed)
    Q, L = src.product, len(src)
    xs = rand_ints(rng, 0, Q, src.n)
    xs[:2] = [0, Q - 1]
    out = as_lists(conv(residues_of(xs, src), exact=False))
    for i, v in enumerate(xs):
        got = [out[j][i] for j in range(len(dst))]
        us = [
            u for u in range(L) if all((v + u * Q) % p == got[j] for j, p in enumerate(dst.moduli))
        ]
        assert len(us) == 1, f"coefficient {i}: {got} is not x + u*Q (0 <= u < {L}) for x={v}"
    # x = 0 has all y_i = 0: no overflow term
    assert all(out[j][0] == 0 for j in range(len(dst)))


def test_context_converters_round_trip():
    """Q -> R -> Q exact conversions in the scheme context are the identity on centered values."""
    ctx = Context(preset("TOY6"))
    qb = ctx.q_basis()
    rng = np.random.default_rng(7)
    Q = qb.product
    xs = [v for v in rand_ints(rng, -(Q // 2) + 1, Q // 2, qb.n)]
    x = residues_of(xs, qb)
    back = ctx.r_to_q(ctx.q_to_r(x, exact=True), exact=True)
    np.testing.assert_array_equal(back, x)
    assert ctx.r_basis.product > 2 * ctx.params.t * ctx.n * Q


# ---------------------------------------------------------------- scale and round


def scale_case(log_n, bits, t):
    return pytest.param(log_n, bits, t, id=f"logN={log_n}-L={len(bits)}-tbits={t.bit_length()}")


SCALE_CASES = [
    scale_case(4, (28, 28, 28), 65537),
    scale_case(5, (30,) * 4, 1032193),
    scale_case(4, (30,) * 3, (1 << 58) - 27),  # 58-bit prime t: four 16-bit omega chunks
    scale_case(4, (29, 30), 3),
    scale_case(6, (30,) * 6, (1 << 61) - 1),  # Mersenne prime M61
]


@pytest.mark.parametrize("log_n,bits,t", SCALE_CASES)
@PROPS
@given(seed=SEEDS)
def test_scale_round_to_t(log_n, bits, t, seed):
    b = make_basis(log_n, bits)
    scaler = ScaleRoundToT(b, t)
    rng = np.random.default_rng(seed)
    Q = b.product
    xs = rand_ints(rng, 0, Q, 2 * b.n)
    xs[:3] = [0, Q - 1, 1]
    xs = [v for v in xs if not near_half(t * v, Q)]
    assume(len(xs) >= b.n)
    xs = xs[: b.n]
    out = scaler(residues_of(xs, b)[None])
    assert out.shape == (1, b.n) and out.dtype == np.uint64
    want = [reference.round_div(t * v, Q) % t for v in xs]
    assert [int(v) for v in out[0]] == want


def test_scale_round_to_t_prime_check():
    from gpubfv.ring.modmath import is_prime

    assert is_prime((1 << 58) - 27) and is_prime((1 << 61) - 1)


HPS_CASES = [(4, (28, 28, 28), 65537), (6, (29,) * 4, 1032193), (5, (30,) * 2, (1 << 29) - 3)]


@pytest.mark.parametrize(
    "log_n,bits,t",
    HPS_CASES,
    ids=[f"logN={ln}-L={len(b)}-tbits={t.bit_length()}" for ln, b, t in HPS_CASES],
)
@PROPS
@given(seed=SEEDS)
def test_hps_scale_to_r(log_n, bits, t, seed):
    n = 1 << log_n
    qb = make_basis(log_n, bits)
    Q = qb.product
    need = Q.bit_length() + t.bit_length() + n.bit_length() + 3
    rb = make_basis(log_n, (30,) * math.ceil(need / 30), avoid=qb.moduli)
    R = rb.product
    scaler = HPSScaler(qb, rb, t)
    rng = np.random.default_rng(seed)
    lim = Q * R // 4
    xs = rand_ints(rng, -lim + 1, lim, 2 * n)
    xs[:3] = [0, -lim + 1, lim - 1]
    xs = [v for v in xs if not near_half(t * v, Q)]
    assume(len(xs) >= n)
    xs = xs[:n]
    out = scaler(residues_of(xs, qb)[None], residues_of(xs, rb)[None])
    assert out.shape == (1, len(rb), n)
    want = reference.to_residues([reference.round_div(t * v, Q) for v in xs], rb.moduli)
    assert as_lists(out[0]) == want
