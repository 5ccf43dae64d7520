"""CPU kernels: NTT tables, NTT/INTT, ChaCha20 and samplers, against slow Python-int references."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402

from kernels.cpu import (  # noqa: E402
    chacha20_blocks,
    ntt_forward,
    ntt_inverse,
    sample_cbd,
    sample_gaussian,
    sample_ternary,
    sample_uniform_bounded,
    sample_uniform_mod,
)
from kernels.ntt_tables import (  # noqa: E402
    find_primitive_2n_root,
    generate_ntt_primes,
    make_ntt_tables,
)
from kernels.tables import barrett_constants  # noqa: E402


def ntt_primes(n: int, k: int, bits: int = 30) -> list[int]:
    return generate_ntt_primes([bits] * k, n)


def rand_poly(rng, moduli, n, m=1):
    a = np.stack([rng.integers(0, q, (m, n)) for q in moduli], axis=1)
    return np.ascontiguousarray(a.astype(np.uint32))


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize("bits", [2, 17, 29, 30])
def test_host_barrett_constants(bits):
    """kernels.tables packs mu = floor(2^2k / q) and k = bitlen(q) the way the kernels unpack it,
    identically to the copy still in kernels.cpu.arith (removed by the integrator later)."""
    from kernels.cpu.arith import barrett_constants as cpu_copy

    qs = [q for q in (3, (1 << bits) - 1, (1 << (bits - 1)) + 1) if q.bit_length() == bits]
    got = barrett_constants(np.array(qs, dtype=np.uint32))
    assert got.dtype == np.uint64
    for q, w in zip(qs, got.tolist()):
        k = w >> 56
        assert k == q.bit_length() and w & ((1 << 56) - 1) == (1 << (2 * k)) // q
    np.testing.assert_array_equal(got, cpu_copy(np.array(qs, dtype=np.uint32)))
    with pytest.raises(ValueError):
        barrett_constants(np.array([1], dtype=np.uint32))


def test_tables_refuse_bad_input():
    with pytest.raises(ValueError):
        make_ntt_tables([12289 * 3], 8)  # not prime (and not 1 mod 16)
    with pytest.raises(ValueError):
        make_ntt_tables([97 * 113], 8)  # 10961 = 1 mod 16 but composite
    with pytest.raises(ValueError):
        make_ntt_tables([17], 16)  # 17 != 1 mod 32
    with pytest.raises(ValueError):
        make_ntt_tables([2**31 - 1], 2)  # >= 2^30
    with pytest.raises(ValueError):
        make_ntt_tables([12289], 12)  # n not a power of two
    with pytest.raises(ValueError):
        make_ntt_tables([12289], 1)
    with pytest.raises(ValueError):
        make_ntt_tables([], 8)
    assert 10961 % 16 == 1


def test_tables_psi_deterministic_and_primitive():
    for n in (2, 8, 1024):
        for q in ntt_primes(n, 2):
            psi = find_primitive_2n_root(q, n)
            assert psi == find_primitive_2n_root(q, n)
            assert pow(psi, n, q) == q - 1
    t = make_ntt_tables(ntt_primes(16, 2), 16)
    for arr in (t.q, t.w, t.w_shoup, t.wi, t.wi_shoup, t.n_inv, t.n_inv_shoup):
        assert arr.dtype == np.uint32 and arr.flags.c_contiguous


# ---------------------------------------------------------------- NTT


@settings(max_examples=25, deadline=None)
@given(
    logn=st.integers(1, 6),
    nmods=st.integers(1, 3),
    bits=st.sampled_from([20, 27, 30]),
    seed=st.integers(0, 2**32 - 1),
)
def test_ntt_forward_matches_reference(logn, nmods, bits, seed):
    n = 1 << logn
    mods = ntt_primes(n, nmods, bits)
    t = make_ntt_tables(mods, n)
    rng = np.random.default_rng(seed)
    a = rand_poly(rng, mods, n)
    b = a.copy()
    ntt_forward(b, t)
    for l, q in enumerate(mods):
        want = reference.ntt_reference([int(x) for x in a[0, l]], q, t.psi[l])
        assert [int(x) for x in b[0, l]] == want


def test_ntt_extremes_reduced():
    n = 64
    mods = ntt_primes(n, 2)
    t = make_ntt_tables(mods, n)
    a = np.stack([np.full(n, q - 1) for q in mods])[None].astype(np.uint32)
    b = a.copy()
    ntt_forward(b, t)
    for l, q in enumerate(mods):
        assert (b[0, l] < q).all()
        assert [int(x) for x in b[0, l]] == reference.ntt_reference([q - 1] * n, q, t.psi[l])
    ntt_inverse(b, t)
    assert (b == a).all()


@pytest.mark.parametrize("logn", [1, 2, 3, 4, 5, 8, 10, 12])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("nl", [1, 2, 4])
def test_ntt_roundtrip(logn, m, nl):
    n = 1 << logn
    mods = ntt_primes(n, nl)
    t = make_ntt_tables(mods, n)
    rng = np.random.default_rng(logn * 100 + m * 10 + nl)
    a = rand_poly(rng, mods, n, m)
    b = a.copy()
    ntt_forward(b, t)
    for l, q in enumerate(mods):
        assert (b[:, l] < q).all()
    ntt_inverse(b, t)
    assert (b == a).all()


def test_ntt_serial_equals_parallel():
    n = 1024
    mods = ntt_primes(n, 3)
    t = make_ntt_tables(mods, n)
    a = rand_poly(np.random.default_rng(5), mods, n, 2)
    b, c = a.copy(), a.copy()
    ntt_forward(b, t, parallel=False)
    ntt_forward(c, t, parallel=True)
    assert (b == c).all()
    ntt_inverse(b, t, parallel=False)
    ntt_inverse(c, t, parallel=True)
    assert (b == a).all() and (c == a).all()


@settings(max_examples=15, deadline=None)
@given(logn=st.integers(1, 6), nmods=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_ntt_negacyclic_product(logn, nmods, seed):
    n = 1 << logn
    mods = ntt_primes(n, nmods)
    t = make_ntt_tables(mods, n)
    rng = np.random.default_rng(seed)
    a = rand_poly(rng, mods, n)
    b = rand_poly(rng, mods, n)
    fa, fb = a.copy(), b.copy()
    ntt_forward(fa, t)
    ntt_forward(fb, t)
    qv = t.q.astype(np.uint64)[None, :, None]
    c = ((fa.astype(np.uint64) * fb.astype(np.uint64)) % qv).astype(np.uint32)
    ntt_inverse(c, t)
    for l, q in enumerate(mods):
        want = reference.negacyclic_mul([int(x) for x in a[0, l]], [int(x) for x in b[0, l]], q)
        assert [int(x) for x in c[0, l]] == want


def test_ntt_wrapper_validates():
    t = make_ntt_tables([12289], 8)
    with pytest.raises(TypeError):
        ntt_forward(np.zeros((1, 1, 8), np.int64), t)
    with pytest.raises(ValueError):
        ntt_forward(np.zeros((1, 2, 8), np.uint32), t)
    with pytest.raises(ValueError):
        ntt_forward(np.zeros((1, 8), np.uint32), t)
    with pytest.raises(ValueError):
        ntt_inverse(np.zeros((1, 1, 16), np.uint32)[:, :, ::2], t)
    a = np.zeros((0, 1, 8), np.uint32)
    ntt_forward(a, t)


def test_crt_reference():
    mods = [12289, 40961, 65537]
    x = 123456789012
    assert reference.crt_reconstruct([x % m for m in mods], mods) == x % math.prod(mods)


# ---------------------------------------------------------------- ChaCha20


def _w(hexstr: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexstr), dtype="<u4").astype(np.uint32)


def test_chacha20_rfc8439_vector():
    key = np.arange(32, dtype=np.uint8).view("<u4").astype(np.uint32)
    nonce = _w("000000090000004a00000000")
    out = chacha20_blocks(key, nonce, 1, 1)
    want = (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )
    assert out.shape == (1, 16) and out.dtype == np.uint32
    assert out.astype("<u4").tobytes().hex() == want


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("nblocks", [1, 17, 300])
def test_chacha20_matches_cryptography(seed, nblocks):
    cg = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2**32, 8, dtype=np.uint32)
    nonce = rng.integers(0, 2**32, 3, dtype=np.uint32)
    counter0 = int(rng.integers(0, 1000))
    got = chacha20_blocks(key, nonce, counter0, nblocks).astype("<u4").tobytes()
    full_nonce = counter0.to_bytes(4, "little") + nonce.astype("<u4").tobytes()
    alg = cg.algorithms.ChaCha20(key.astype("<u4").tobytes(), full_nonce)
    want = cg.Cipher(alg, mode=None).encryptor().update(bytes(64 * nblocks))
    assert got == want


def test_chacha20_validates():
    key = np.zeros(8, np.uint32)
    nonce = np.zeros(3, np.uint32)
    with pytest.raises(ValueError):
        chacha20_blocks(np.zeros(7, np.uint32), nonce, 0, 1)
    with pytest.raises(ValueError):
        chacha20_blocks(key, np.zeros(3, np.int64), 0, 1)
    with pytest.raises(TypeError):
        chacha20_blocks(list(range(8)), nonce, 0, 1)
    with pytest.raises(ValueError):
        chacha20_blocks(key, nonce, 2**32 - 1, 2)
    assert chacha20_blocks(key, nonce, 0, 0).shape == (0, 16)


# ---------------------------------------------------------------- samplers


def _kn(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, 8, dtype=np.uint32), rng.integers(0, 2**32, 3, dtype=np.uint32)


def _words(key, nonce, nwords):
    nb = (nwords + 15) // 16
    return [int(x) for x in chacha20_blocks(key, nonce, 0, nb).reshape(-1)[:nwords]]


def _v128(ws, i):
    return ws[4 * i] + (ws[4 * i + 1] << 32) + (ws[4 * i + 2] << 64) + (ws[4 * i + 3] << 96)


def test_uniform_mod_matches_python():
    key, nonce = _kn(10)
    mods = np.array(ntt_primes(16, 3), dtype=np.uint32)
    got = sample_uniform_mod(key, nonce, mods, (2, 3, 16))
    assert got.shape == (2, 3, 16) and got.dtype == np.uint32
    ws = _words(key, nonce, 4 * got.size)
    flat = got.reshape(-1)
    for i in range(got.size):
        q = int(mods[(i // 16) % 3])
        # Lemire's multiply-shift on the 128-bit value (the CRP protocol since issue 11; it was
        # v mod q: same statistical distance q / 2^128, no division on CPU or GPU)
        assert int(flat[i]) == (_v128(ws, i) * q) >> 128


def test_cbd_matches_python():
    key, nonce = _kn(11)
    got = sample_cbd(key, nonce, 500)
    ws = _words(key, nonce, 1000)
    want = [
        bin(ws[2 * i] & 0x1FFFFF).count("1") - bin(ws[2 * i + 1] & 0x1FFFFF).count("1")
        for i in range(500)
    ]
    assert got.dtype == np.int64 and got.tolist() == want


def test_ternary_matches_python():
    key, nonce = _kn(12)
    got = sample_ternary(key, nonce, 500)
    ws = _words(key, nonce, 1000)
    # multiply-shift floor(3 v / 2^64) (was v mod 3; same bias bound 3 / 2^64)
    want = [((3 * (ws[2 * i] + (ws[2 * i + 1] << 32))) >> 64) - 1 for i in range(500)]
    assert got.dtype == np.int64 and got.tolist() == want


@pytest.mark.parametrize("sigma", [3.2, 2.0**20, 2.0**55])
def test_gaussian_matches_python(sigma):
    key, nonce = _kn(13)
    got = sample_gaussian(key, nonce, 300, sigma)
    ws = _words(key, nonce, 1200)
    want = []
    for i in range(300):
        w0, w1, w2, w3 = ws[4 * i : 4 * i + 4]
        u1 = (((w0 >> 5) << 26) + (w1 >> 6) + 1) / 2.0**53
        u2 = (((w2 >> 5) << 26) + (w3 >> 6)) / 2.0**53
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        want.append(round(sigma * z))
    assert got.dtype == np.int64
    # libm may differ from numba's math in the last ulp; allow +-1 on the rounded value
    diff = np.abs(got - np.array(want, dtype=np.int64))
    assert (diff <= max(1, int(sigma * 2.0**-45))).all()
    assert (diff == 0).mean() > 0.9


@pytest.mark.parametrize("bound", [0, 1, 5, 2**31, 2**31 + 7, 2**40 + 3, 2**61 + 12345, 2**62 - 1])
def test_uniform_bounded_matches_python(bound):
    key, nonce = _kn(14)
    got = sample_uniform_bounded(key, nonce, bound, 200)
    ws = _words(key, nonce, 800)
    m = 2 * bound + 1
    want = [((_v128(ws, i) * m) >> 128) - bound for i in range(200)]  # multiply-shift (was % m)
    assert got.dtype == np.int64 and got.tolist() == want


def test_multiply_shift_carry_extremes():
    # the carry chains at their widest: all-ones keystream words (every partial sum reaches
    # 2^64 - 1), the largest moduli, and zero words; against Python integers
    from kernels.cpu import prng as P

    v = 2**128 - 1
    ones = np.full(16, 0xFFFFFFFF, dtype=np.uint32)
    zeros = np.zeros(16, dtype=np.uint32)
    for q in (2, 3, 2**31 + 11, 2**32 - 5, 2**32 - 1):
        out = np.empty(4, dtype=np.uint32)
        P._uniform_mod_kernel(ones, np.array([q], dtype=np.uint64), 1, 4, out)
        assert out.tolist() == [(v * q) >> 128] * 4 == [q - 1] * 4
        P._uniform_mod_kernel(zeros, np.array([q], dtype=np.uint64), 1, 4, out)
        assert out.tolist() == [0] * 4
    for m in (1, 3, 2**32 - 1, 2**32 + 1, 2**63 - 1):
        out = np.empty(4, dtype=np.int64)
        P._bounded_kernel(ones, np.uint64(m), np.int64(m // 2), out)
        assert out.tolist() == [((v * m) >> 128) - m // 2] * 4 == [m // 2] * 4
    out = np.empty(8, dtype=np.int64)
    P._ternary_kernel(ones, out)
    assert out.tolist() == [1] * 8
    # v just above a multiple of 2^128 / q: v * q mod 2^128 < q, right only if every low-order
    # carry reaches the top word
    for k, q in enumerate((3, 97, 2**31 + 11, 2**32 - 5, 2**32 + 1, 2**63 - 1), start=1):
        v = -(-(k * 2**128) // q)
        ks = np.array([(v >> (32 * j)) & 0xFFFFFFFF for j in range(4)], dtype=np.uint32)
        out = np.empty(1, dtype=np.int64)
        P._bounded_kernel(ks, np.uint64(q), np.int64(0), out)
        assert int(out[0]) == (v * q) >> 128 == k
        if q < 2**32:
            o32 = np.empty(1, dtype=np.uint32)
            P._uniform_mod_kernel(ks, np.array([q], dtype=np.uint64), 1, 1, o32)
            assert int(o32[0]) == k


def test_uniform_samplers_chi_square():
    # uniformity of the multiply-shift samplers on a small modulus / range (99.9% chi-square
    # critical values, degrees of freedom 96 -> 141.6, 20 -> 43.8, 2 -> 13.8)
    key, nonce = _kn(18)
    r = sample_uniform_mod(key, nonce, np.array([97], dtype=np.uint32), (1, 97_000)).reshape(-1)
    chi = ((np.bincount(r, minlength=97) - 1000.0) ** 2 / 1000.0).sum()
    assert chi < 141.6, chi
    u = sample_uniform_bounded(key, nonce, 10, 84_000) + 10
    chi = ((np.bincount(u, minlength=21) - 4000.0) ** 2 / 4000.0).sum()
    assert chi < 43.8, chi
    t = sample_ternary(key, nonce, 90_000) + 1
    chi = ((np.bincount(t, minlength=3) - 30_000.0) ** 2 / 30_000.0).sum()
    assert chi < 13.8, chi  # 2 degrees of freedom


def test_sampler_distributions():
    key, nonce = _kn(15)
    c = sample_cbd(key, nonce, 100_000).astype(np.float64)
    assert abs(c.mean()) < 0.05 and abs(c.var() - 10.5) < 0.3
    t = sample_ternary(key, nonce, 100_000)
    assert set(np.unique(t).tolist()) <= {-1, 0, 1}
    for v in (-1, 0, 1):
        assert abs((t == v).mean() - 1 / 3) < 0.01
    g = sample_gaussian(key, nonce, 100_000, 2.0**20).astype(np.float64)
    assert abs(g.std() / 2.0**20 - 1) < 0.02 and abs(g.mean()) < 2.0**20 * 0.02
    u = sample_uniform_bounded(key, nonce, 10, 100_000)
    assert u.min() == -10 and u.max() == 10
    mods = np.array(ntt_primes(1024, 2), dtype=np.uint32)
    r = sample_uniform_mod(key, nonce, mods, (4, 2, 1024)).astype(np.float64)
    for l, q in enumerate(mods):
        assert abs(r[:, l].mean() / int(q) - 0.5) < 0.02


def test_sampler_determinism_and_validation():
    key, nonce = _kn(16)
    _, nonce2 = _kn(17)
    mods = np.array(ntt_primes(16, 2), dtype=np.uint32)
    for f in (
        lambda k, n: sample_uniform_mod(k, n, mods, (3, 2, 16)),
        lambda k, n: sample_cbd(k, n, 64),
        lambda k, n: sample_ternary(k, n, 64),
        lambda k, n: sample_gaussian(k, n, 64, 3.2),
        lambda k, n: sample_uniform_bounded(k, n, 2**50, 64),
    ):
        a, b, c = f(key, nonce), f(key, nonce), f(key, nonce2)
        assert (a == b).all()
        assert not (a == c).all()
    # prefix property: index i depends only on (key, nonce, i)
    assert (sample_cbd(key, nonce, 10) == sample_cbd(key, nonce, 100)[:10]).all()
    with pytest.raises(ValueError):
        sample_gaussian(key, nonce, 4, 0.0)
    with pytest.raises(ValueError):
        sample_gaussian(key, nonce, 4, 2.0**60)
    with pytest.raises(ValueError):
        sample_uniform_bounded(key, nonce, 2**62, 4)
    with pytest.raises(ValueError):
        sample_uniform_mod(key, nonce, mods, (3, 16))
    with pytest.raises(ValueError):
        sample_cbd(key, nonce, -1)
