"""kernels.cuda against kernels.cpu, bit for bit, on random inputs.

CI has no GPU: tests/conftest.py turns on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) unless
pytest runs with `--backend cuda`, in which case the same tests run on the GPU with CuPy arrays.
Output buffers are poisoned before every run so that unwritten elements show up. Shapes are small
(the simulator runs every CUDA thread as a Python thread) and include sizes that are not
multiples of the block sizes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import kernels.cpu as K
from gpubfv.ring.modmath import generate_ntt_primes
from kernels.cpu.arith import barrett_constants
from kernels.ntt_tables import make_ntt_tables
from tests.reference import crt_reconstruct

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

if not SIM:  # pragma: no cover - real GPU run (--backend cuda)
    cupy = pytest.importorskip("cupy")

import kernels.cuda as G  # noqa: E402
from kernels.cuda import _common as _GC  # noqa: E402
from kernels.cuda._sigs import SIGNATURES  # noqa: E402


@pytest.fixture(autouse=True)
def _launch_signatures_in_table():
    """Every launch in every test here must use a signature of kernels/cuda/_sigs.py, the table
    that benchmarks/gpu_static.py compiles and budgets (so CI checks the code that runs)."""
    _GC.RECORDED = set()
    yield
    seen, _GC.RECORDED = _GC.RECORDED, None
    known = {(name, sig) for (_, name), sig in SIGNATURES.items()}
    missing = sorted(s for s in seen if s not in known)
    assert not missing, f"launch signatures missing from kernels/cuda/_sigs.py: {missing}"


POISON32 = np.uint32(0xDEADBEEF)
POISON64 = np.uint64(0xDEADBEEFDEADBEEF)


def dev(a: np.ndarray):
    """Host array -> kernel array (a fresh copy: numpy in the simulator, CuPy on a GPU)."""
    a = np.ascontiguousarray(a)
    return a.copy() if SIM else cupy.asarray(a)


def host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else cupy.asnumpy(a)


def poisoned(shape, dtype=np.uint32):
    fill = POISON32 if np.dtype(dtype) == np.uint32 else POISON64
    return dev(np.full(shape, fill, dtype=dtype))


def ntt_primes(n: int, k: int, bits: int = 30) -> list[int]:
    return generate_ntt_primes([bits] * k, n)


def rand_poly(rng, moduli, n, m):
    a = np.stack([rng.integers(0, q, (m, n)) for q in moduli], axis=1)
    return np.ascontiguousarray(a.astype(np.uint32))


def test_same_api_as_cpu():
    import inspect

    assert sorted(G.__all__) == sorted(K.__all__)
    for name in K.__all__:
        cpu_params = list(inspect.signature(getattr(K, name)).parameters)
        gpu_params = list(inspect.signature(getattr(G, name)).parameters)
        assert gpu_params[: len(cpu_params)] == cpu_params, name


# ---------------------------------------------------------------- NTT

NTT_CASES = [  # (N, L, M, tile, threads): tile < N exercises the multi-launch (global) path
    (16, 1, 1, None, None),
    (64, 2, 3, None, None),
    (256, 3, 1, None, None),
    (64, 3, 2, 16, 3),  # 2 launches, requested threads rounded up to a column multiple
    (64, 2, 1, 8, 5),  # 2 launches of 3 stages
    (32, 1, 1, 4, 1),  # 3 launches of 2/2/1 stages, one thread per block
    (2, 1, 3, None, 1),
    pytest.param(256, 2, 3, 8, 5, marks=pytest.mark.slow),
    pytest.param(128, 1, 2, 2, 1, marks=pytest.mark.slow),  # one stage per launch
]


@pytest.mark.parametrize("n,L,M,tile,threads", NTT_CASES)
def test_ntt_forward_inverse(n, L, M, tile, threads):
    rng = np.random.default_rng(n * 100 + L * 10 + M)
    tables = make_ntt_tables(ntt_primes(n, L), n)
    a = rand_poly(rng, tables.moduli, n, M)
    kw = {}
    if tile:
        kw["tile"] = tile
    if threads:
        kw["threads"] = threads
    ref = a.copy()
    K.ntt_forward(ref, tables)
    got = dev(a)
    G.ntt_forward(got, tables, **kw)
    assert np.array_equal(host(got), ref)
    # inverse of a random bit-reversed-order array (not only of our own output)
    b = rand_poly(rng, tables.moduli, n, M)
    ref_b = b.copy()
    K.ntt_inverse(ref_b, tables)
    got_b = dev(b)
    G.ntt_inverse(got_b, tables, **kw)
    assert np.array_equal(host(got_b), ref_b)
    G.ntt_inverse(got, tables, **kw)
    assert np.array_equal(host(got), a)


def test_ntt_block_threads_keep_one_column_per_thread():
    # the kernels rely on it: a thread's slots e = tid + i*nth all lie in column tid mod C
    from kernels.cuda.ntt import TILE_MAX, _block_threads

    for log_tile in range(1, TILE_MAX.bit_length()):
        tile = 1 << log_tile
        for k in range(1, log_tile + 1):
            for req in (1, 3, 5, 32, 512, 4096):
                nthr = _block_threads(req, tile, k)
                assert nthr % (tile >> k) == 0 and 1 <= nthr <= max(1, tile // 2), (tile, k, req)


def test_ntt_small_modulus_and_empty_batch():
    tables = make_ntt_tables([97, 193], 16)  # tiny primes: lazy ranges relative to q matter
    rng = np.random.default_rng(7)
    a = rand_poly(rng, tables.moduli, 16, 3)
    ref = a.copy()
    K.ntt_forward(ref, tables)
    got = dev(a)
    G.ntt_forward(got, tables, tile=4, threads=3)
    assert np.array_equal(host(got), ref)
    empty = dev(np.zeros((0, 2, 16), dtype=np.uint32))
    G.ntt_forward(empty, tables)


def test_ntt_rejects_bad_input():
    tables = make_ntt_tables(ntt_primes(16, 1), 16)
    with pytest.raises(ValueError):
        G.ntt_forward(dev(np.zeros((1, 2, 16), dtype=np.uint32)), tables)
    with pytest.raises(TypeError):
        G.ntt_forward(dev(np.zeros((1, 1, 16), dtype=np.int64)), tables)
    with pytest.raises(ValueError):
        G.ntt_forward(dev(np.zeros((1, 1, 16), dtype=np.uint32)), tables, tile=12)


# ---------------------------------------------------------------- ChaCha20 and samplers


@pytest.fixture(scope="module")
def key_nonce():
    rng = np.random.default_rng(11)
    return (
        rng.integers(0, 2**32, 8, dtype=np.uint64).astype(np.uint32),
        rng.integers(0, 2**32, 3, dtype=np.uint64).astype(np.uint32),
    )


@pytest.mark.parametrize("counter0,nblocks", [(0, 1), (5, 37), (2**32 - 3, 3), (0, 0)])
def test_chacha20_blocks(key_nonce, counter0, nblocks):
    key, nonce = key_nonce
    got = G.chacha20_blocks(key, nonce, counter0, nblocks)
    assert np.array_equal(host(got), K.chacha20_blocks(key, nonce, counter0, nblocks))


def test_chacha20_rfc8439_vector():
    # RFC 8439 2.3.2: key 00..1f, nonce 000000090000004a00000000, counter 1
    key = np.frombuffer(bytes(range(32)), dtype="<u4").astype(np.uint32)
    nonce = np.frombuffer(bytes.fromhex("000000090000004a00000000"), dtype="<u4").astype(np.uint32)
    out = host(G.chacha20_blocks(key, nonce, 1, 1))
    assert out[0, 0] == 0xE4E7F110 and out[0, 15] == 0x4E3C50A2


COUNTS = [0, 1, 7, 13, 100]  # not multiples of 4, 8 or the block size


@pytest.mark.parametrize("count", COUNTS)
def test_samplers_small(key_nonce, count):
    key, nonce = key_nonce
    for name in ("sample_cbd", "sample_ternary"):
        got = getattr(G, name)(key, nonce, count)
        assert np.array_equal(host(got), getattr(K, name)(key, nonce, count)), name
    for bound in (0, 1, 5, 2**31 - 1, 2**31, 2**61 + 12345):
        got = G.sample_uniform_bounded(key, nonce, bound, count)
        assert np.array_equal(host(got), K.sample_uniform_bounded(key, nonce, bound, count))


@pytest.mark.parametrize("sigma", [3.2, 1.0e6, 2.0**45])
def test_sample_gaussian(key_nonce, sigma):
    key, nonce = key_nonce
    got = host(G.sample_gaussian(key, nonce, 61, sigma))
    ref = K.sample_gaussian(key, nonce, 61, sigma)
    if SIM:
        assert np.array_equal(got, ref)
    else:  # pragma: no cover - CUDA libm may round differently by one on rare elements
        assert np.max(np.abs(got - ref)) <= 1


@pytest.mark.parametrize("shape", [(3, 17), (2, 3, 5), (1, 3, 64)])
def test_sample_uniform_mod(key_nonce, shape):
    key, nonce = key_nonce
    mods = np.array([97, 12289, 2**30 - 35], dtype=np.uint32)
    got = G.sample_uniform_mod(key, nonce, mods, shape)
    assert got.shape == shape
    assert np.array_equal(host(got), K.sample_uniform_mod(key, nonce, mods, shape))


@pytest.mark.parametrize("shape", [(2, 4, 3), (1, 4, 1), (3, 4, 6)])
def test_sample_uniform_mod_wide_moduli(key_nonce, shape):
    # moduli up to 2^32 (the float64 reductions' widest case) and rows shorter than the four
    # outputs a CUDA thread writes (its limb index steps across several rows)
    key, nonce = key_nonce
    mods = np.array([2**32 - 5, 2, 2**31 + 11, 2**30 + 3], dtype=np.uint32)
    got = G.sample_uniform_mod(key, nonce, mods, shape)
    assert np.array_equal(host(got), K.sample_uniform_mod(key, nonce, mods, shape))


def test_samplers_reject_bad_input(key_nonce):
    key, nonce = key_nonce
    with pytest.raises(ValueError):
        G.sample_cbd(key, nonce, -1)
    with pytest.raises(ValueError):
        G.sample_gaussian(key, nonce, 4, 0.0)
    with pytest.raises(ValueError):
        G.chacha20_blocks(key, nonce, 2**32 - 1, 2)
    with pytest.raises(ValueError):
        G.sample_uniform_mod(key, nonce, np.array([97], dtype=np.uint32), (2, 4))
    with pytest.raises((TypeError, ValueError)):
        G.sample_ternary(key[:7], nonce, 4)


# ---------------------------------------------------------------- element-wise arithmetic

# n = 256: eight blocks of the simulator's 32 threads; 40: not a multiple of 32; L, M > 1 in the
# others (3 x 5 at n = 256 cost 4x the simulator time for no other grid shape)
SHAPES = [(16, 1, 1), (64, 2, 3), (256, 2, 2), (40, 3, 2)]


def _mods(n, L):
    if n & (n - 1):
        q = np.array([12289, 40961, 65537][:L], dtype=np.uint32)  # any moduli work here
    else:
        q = np.array(ntt_primes(n, L), dtype=np.uint32)
    return q, K.arith.barrett_constants(q)


def _pair(rng, q, n, M, bm):
    return rand_poly(rng, q, n, M), rand_poly(rng, q, n, bm)


@pytest.mark.parametrize("n,L,M", SHAPES)
@pytest.mark.parametrize("broadcast", [False, True])
def test_binary_ops(n, L, M, broadcast):
    rng = np.random.default_rng(n + 7 * L + 31 * M + broadcast)
    q, mu = _mods(n, L)
    a, b = _pair(rng, q, n, M, 1 if broadcast else M)
    if broadcast:
        a[0, :, :3] = 0  # zeros and q-1 edge values
        b[0, :, 1] = q - 1
    for name in ("add", "sub", "mul"):
        ref = np.empty_like(a)
        out = poisoned(a.shape)
        if name == "mul":
            getattr(K, name)(a, b, q, mu, ref)
            getattr(G, name)(dev(a), dev(b), dev(q), dev(mu), out)
        else:
            getattr(K, name)(a, b, q, ref)
            getattr(G, name)(dev(a), dev(b), dev(q), out)
        assert np.array_equal(host(out), ref), name
    acc = rand_poly(rng, q, n, M)
    ref = acc.copy()
    K.mul_add(a, b, q, mu, ref)
    got = dev(acc)
    G.mul_add(dev(a), dev(b), dev(q), dev(mu), got)
    assert np.array_equal(host(got), ref)


def test_mul_barrett_edge_moduli():
    # The 32-bit-word Barrett of the CUDA multiplies at its edges: 30-bit moduli (largest
    # estimate), powers of two (mu = 2^(k+1), saturated), q = 2, 3, and operands q - 1 (q = 1
    # is no modulus: the host table refuses it).
    q = np.array([(1 << 30) - 35, (1 << 29) + 1, 1 << 20, 1 << 29, 2, 3], dtype=np.uint32)
    mu = K.arith.barrett_constants(q)
    rng = np.random.default_rng(11)
    M, n = 3, 64
    a = rand_poly(rng, q, n, M)
    b = rand_poly(rng, q, n, M)
    a[0, :, :8] = (q - 1)[:, None]
    b[:, :, :4] = (q - 1)[:, None]
    for bm in (M, 1):
        bb = np.ascontiguousarray(b[:bm])
        ref = np.empty_like(a)
        K.mul(a, bb, q, mu, ref)
        out = poisoned(a.shape)
        G.mul(dev(a), dev(bb), dev(q), dev(mu), out)
        assert np.array_equal(host(out), ref)
        ref = a.copy()
        K.mul_add(b, bb, q, mu, ref)
        got = dev(a)
        G.mul_add(dev(b), dev(bb), dev(q), dev(mu), got)
        assert np.array_equal(host(got), ref)
    s = (q - 1).astype(np.uint32)
    ref = np.empty_like(a)
    K.mul_scalar(a, s, q, mu, ref)
    out = poisoned(a.shape)
    G.mul_scalar(dev(a), dev(s), dev(q), dev(mu), out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize("n,L,M", SHAPES)
def test_unary_ops(n, L, M):
    rng = np.random.default_rng(3 * n + L + M)
    q, mu = _mods(n, L)
    a = rand_poly(rng, q, n, M)
    a[..., 0] = 0
    ref = np.empty_like(a)
    K.neg(a, q, ref)
    out = poisoned(a.shape)
    G.neg(dev(a), dev(q), out)
    assert np.array_equal(host(out), ref)
    s = np.array([int(rng.integers(0, int(x))) for x in q], dtype=np.uint32)
    K.mul_scalar(a, s, q, mu, ref)
    out = poisoned(a.shape)
    G.mul_scalar(dev(a), dev(s), dev(q), dev(mu), out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize("K_,n,L,M", [(1, 16, 1, 1), (4, 64, 2, 3), (7, 40, 3, 2)])
def test_sum_batch(K_, n, L, M):
    rng = np.random.default_rng(K_ + n)
    q, _ = _mods(n, L)
    a = np.ascontiguousarray(np.stack([rand_poly(rng, q, n, M) for _ in range(K_)]))
    ref = np.empty(a.shape[1:], dtype=np.uint32)
    K.sum_batch(a, q, ref)
    out = poisoned(ref.shape)
    G.sum_batch(dev(a), dev(q), out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize("n,L,M", SHAPES)
def test_from_signed(n, L, M):
    rng = np.random.default_rng(5 * n + L)
    q, _ = _mods(n, L)
    x = rng.integers(-(2**62), 2**62, (M, n), dtype=np.int64)
    x[0, :4] = [-1, 0, 1, -(2**63)]
    ref = np.empty((M, L, n), dtype=np.uint32)
    K.from_signed(x, q, ref)
    out = poisoned(ref.shape)
    G.from_signed(dev(x), dev(q), out)
    assert np.array_equal(host(out), ref)


def test_from_signed_edges():
    # The float64 quotient estimates of the CUDA kernel at their edges: the int64 extremes,
    # exact multiples of q and their neighbours, powers of two, moduli 1, 2, 3 and 30-bit ones.
    q = np.array([(1 << 30) - 35, (1 << 29) + 1, 12289, 1 << 20, 3, 2, 1], dtype=np.uint32)
    big = np.iinfo(np.int64)
    vals = [big.min, big.min + 1, big.max, big.max - 1, 0, 1, -1, 2**53, 2**53 + 1, -(2**53) - 1]
    for qq in q.tolist():
        for k in (1, 3, (2**62) // qq, -((2**62) // qq), (2**63 - 1) // qq, -((2**63) // qq)):
            vals += [k * qq + d for d in (-1, 0, 1) if big.min <= k * qq + d <= big.max]
    vals += [(1 << j) * sgn + d for j in range(31, 63, 4) for sgn in (1, -1) for d in (-1, 0, 1)]
    rng = np.random.default_rng(99)
    n = 128 * ((len(vals) + 127) // 128)
    x = rng.integers(big.min, big.max, (2, n), dtype=np.int64, endpoint=True)
    x[0, : len(vals)] = vals
    ref = np.empty((2, len(q), n), dtype=np.uint32)
    K.from_signed(x, q, ref)
    out = poisoned(ref.shape)
    G.from_signed(dev(x), dev(q), out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize("n,L,M", [(16, 1, 1), (64, 2, 3), (256, 3, 2)])
def test_automorphism(n, L, M):
    rng = np.random.default_rng(n + L + M)
    q, _ = _mods(n, L)
    a = rand_poly(rng, q, n, M)
    a[..., 1] = 0
    for g in (3, 2 * n - 1, 5):
        j = (np.arange(n, dtype=np.int64) * g) % (2 * n)
        idx = (j % n).astype(np.int64)
        negm = (j >= n).astype(np.uint8)
        ref = np.empty_like(a)
        K.automorphism(a, idx, negm, q, ref)
        out = poisoned(a.shape)
        G.automorphism(dev(a), dev(idx), dev(negm), dev(q), out)
        assert np.array_equal(host(out), ref), g


@pytest.mark.parametrize("n,L,M", [(16, 2, 1), (64, 3, 3), (40, 4, 2)])
def test_drop_last_limb(n, L, M):
    """Modulus switching (divide-and-round by the last prime), last prime smaller and larger."""
    rng = np.random.default_rng(7 * n + L + M)
    for bits in ([29] * (L - 1) + [17], [20] * (L - 1) + [29], [30] * L, [14] * (L - 1) + [30]):
        q = np.array(generate_ntt_primes(bits, n), dtype=np.uint32)
        mu = barrett_constants(q)
        ql = int(q[-1])
        ql_mod = np.array([ql % int(x) for x in q[:-1]], dtype=np.uint32)
        ql_inv = np.array([pow(ql, -1, int(x)) for x in q[:-1]], dtype=np.uint32)
        a = rand_poly(rng, q, n, M)
        # edges: last limb 0, q_last - 1 and either side of q_last / 2; other limbs 0, q_i - 1
        a[0, -1, :5] = [0, ql - 1, ql // 2, ql // 2 + 1, 1]
        a[0, :-1, :3] = np.array([0, 1, 0])[None, :] + (q[:-1, None] - 1) * np.array([0, 1, 1])
        ref = np.empty((M, L - 1, n), dtype=np.uint32)
        K.drop_last_limb(a, q, mu, ql_mod, ql_inv, ref)
        out = poisoned((M, L - 1, n))
        G.drop_last_limb(dev(a), dev(q), dev(mu), dev(ql_mod), dev(ql_inv), out)
        assert np.array_equal(host(out), ref), bits
        # against Python integers: round(x / q_L) mod q_i for the centered CRT value x
        big = int(np.prod([int(x) for x in q], dtype=object))
        x0 = crt_reconstruct([int(a[0, i, 0]) for i in range(L)], [int(x) for x in q])
        x0 = x0 - big if x0 > big // 2 else x0
        want = [((x0 - _centered(x0, ql)) // ql) % int(x) for x in q[:-1]]
        assert [int(v) for v in ref[0, :, 0]] == want


def _centered(x, m):
    r = x % m
    return r - m if r > m // 2 else r


def test_arith_rejects_bad_input():
    q, mu = _mods(16, 2)
    a = dev(np.zeros((3, 2, 16), dtype=np.uint32))
    with pytest.raises(ValueError):
        G.add(a, dev(np.zeros((2, 2, 16), dtype=np.uint32)), dev(q), poisoned((3, 2, 16)))
    with pytest.raises(TypeError):
        G.neg(dev(np.zeros((3, 2, 16), dtype=np.int64)), dev(q), poisoned((3, 2, 16)))


# ---------------------------------------------------------------- RNS conversions


def _basis(log_n, bits, avoid=()):
    from gpubfv.ring.basis import RNSBasis
    from gpubfv.ring.modmath import generate_ntt_primes

    n = 1 << log_n
    return RNSBasis(generate_ntt_primes(list(bits), n, set(avoid)), n)


def _rand_in(rng, basis, M):
    return rand_poly(rng, basis.moduli, basis.n, M)


@pytest.mark.parametrize(
    "log_n,src_bits,dst_bits,M",
    [
        (4, (28, 28, 28), (30, 30), 1),
        (6, (30, 29), (30, 30, 30), 3),
        (5, (30,), (29,), 5),
        (4, (30,) * 18, (30, 14), 2),
    ],  # more input limbs than one lazy 64-bit sum holds
)
@pytest.mark.parametrize("exact", [False, True])
def test_base_convert(log_n, src_bits, dst_bits, M, exact):
    from gpubfv.ring.rns import BaseConverter

    src = _basis(log_n, src_bits)
    dst = _basis(log_n, dst_bits, src.moduli)
    conv = BaseConverter(src, dst)
    rng = np.random.default_rng(log_n * 10 + M + exact)
    x = _rand_in(rng, src, M)
    ref = np.empty((M, len(dst), src.n), dtype=np.uint32)
    K.base_convert(x, conv, exact, ref)
    out = poisoned(ref.shape)
    G.base_convert(dev(x), conv, exact, out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize("t", [2, 65537, (1 << 40) + 15, (1 << 60) - 93])
@pytest.mark.parametrize("M", [1, 3])
def test_scale_round_to_t(t, M):
    from gpubfv.ring.rns import ScaleRoundToT

    basis = _basis(4, (30, 29, 28))
    sc = ScaleRoundToT(basis, t)
    rng = np.random.default_rng(M + t % 1000)
    x = _rand_in(rng, basis, M)
    ref = np.empty((M, basis.n), dtype=np.uint64)
    K.scale_round_to_t(x, sc, ref)
    out = poisoned(ref.shape, np.uint64)
    G.scale_round_to_t(dev(x), sc, out)
    assert np.array_equal(host(out), ref)


class _BigT:
    # a hand-made constants holder with t >= 2^63 (ScaleRoundToT sends such a t to widet)
    t = (1 << 63) + 25
    omega16 = np.zeros((4, 3), dtype=np.uint64)
    theta = np.zeros(3)


def test_scale_round_to_t_refuses_t_from_2_63():
    # _mulmod_2k doubles a < t in uint64: t >= 2^63 would wrap; the launcher refuses it
    x = np.zeros((1, 3, 16), dtype=np.uint32)
    out = np.zeros((1, 16), dtype=np.uint64)
    with pytest.raises(ValueError, match="t < 2\\^63"):
        G.scale_round_to_t(dev(x), _BigT(), out)


@pytest.mark.parametrize("M,qbits", [(1, (28, 28, 28)), (3, (28, 28, 28)), (2, (30,) * 17)])
def test_hps_scale_to_r(M, qbits):
    from gpubfv.ring.rns import HPSScaler

    qb = _basis(5, qbits)  # 17 limbs: more than one lazy 64-bit sum of the CUDA kernel holds
    rb = _basis(5, (30, 30, 30, 30), qb.moduli)
    t = 65537
    sc = HPSScaler(qb, rb, t)
    rng = np.random.default_rng(M)
    xq = _rand_in(rng, qb, M)
    xr = _rand_in(rng, rb, M)
    ref = np.empty(xr.shape, dtype=np.uint32)
    K.hps_scale_to_r(xq, xr, sc, ref)
    out = poisoned(ref.shape)
    G.hps_scale_to_r(dev(xq), dev(xr), sc, out)
    assert np.array_equal(host(out), ref)


@pytest.mark.parametrize(
    "t,M,bits",
    [(65537, 1, 28), (65537, 3, 28), ((1 << 45) + 59, 1, 28), ((1 << 45) + 59, 3, 28),
     ((1 << 60) + 33, 2, 30)],
)  # fmt: skip
def test_add_scaled_plain(t, M, bits):
    # 30-bit moduli: the kernel's two Shoup terms sum below 4q < 2^32 only just
    basis = _basis(4, (bits,) * 3)
    big_q = basis.product
    tinv = np.array([pow(t % q, -1, q) for q in basis.moduli], dtype=np.uint32)
    rng = np.random.default_rng(M + t % 97)
    m = rng.integers(0, t, (M, basis.n), dtype=np.uint64)
    m[0, 0] = t - 1
    m[0, 1] = 0  # c = 0: the negative branch's q - 0 = q, corrected by the accumulate
    acc = _rand_in(rng, basis, M)
    ref = acc.copy()
    K.add_scaled_plain(m, t, big_q % t, tinv, basis.q, basis.mu, ref)
    got = dev(acc)
    G.add_scaled_plain(dev(m), t, big_q % t, dev(tinv), dev(basis.q), dev(basis.mu), got)
    assert np.array_equal(host(got), ref)


# ---------------------------------------------------------------- the scheme end to end


def _scheme_run(backend, seed: bytes, values: np.ndarray):
    from gpubfv import (
        PRNG,
        BatchEncoder,
        Context,
        Decryptor,
        Encryptor,
        Evaluator,
        KeyGenerator,
        Parameters,
        ParametersLiteral,
    )

    lit = ParametersLiteral(
        log_n=4, q_bits=(28, 28, 28), p_bits=(28,), t_bits=17, allow_insecure=True
    )
    params = Parameters(lit)
    ctx = Context(params, backend)
    prng = PRNG(seed, backend=backend)
    kg = KeyGenerator(ctx, prng=prng)
    sk = kg.gen_secret_key()
    pk = kg.gen_public_key(sk)
    enc = Encryptor(ctx, pk, prng=prng)
    senc = Encryptor(ctx, sk, prng=prng)
    dec = Decryptor(ctx, sk)
    ev = Evaluator(ctx)
    be = BatchEncoder(ctx)
    pt = be.encode(backend.asarray(values))
    ct = enc.encrypt(pt)
    ct2 = senc.encrypt(pt)
    total = ev.sum([ct, ct2, ct])
    # multiplication (HPS), relinearization and rotations (key switching), modulus switching
    rlk = kg.gen_relin_key(sk)
    gks = kg.gen_galois_keys(sk, steps=[1], columns=True)
    evk = Evaluator(ctx, rlk, gks)
    prod = evk.relinearize(evk.mul(ct, ct2))
    rot = evk.rotate_rows(ct, 1)
    low = evk.mod_switch_to(ct, 2)
    # multiparty: collective public key of 2 peers, collective decryption with smudging
    from gpubfv.mhe import (
        CollectiveDecrypt,
        NoiseEstimate,
        Party,
        PublicKeyGen,
        ShareJournal,
        Smudging,
    )

    sks = [sk, KeyGenerator(ctx, prng=prng).gen_secret_key()]
    parties = [
        Party(
            ctx,
            s,
            peer_id=i,
            journal=ShareJournal.in_memory(unsafe_not_persistent=True),
            prng=prng,
        )
        for i, s in enumerate(sks)
    ]
    ckg = PublicKeyGen(ctx, peers=2)
    crp = ckg.sample_crp(bytes(32))
    cpk = ckg.finalize(ckg.aggregate([pa.public_key_share(ckg, crp) for pa in parties]), crp)
    cct = Encryptor(ctx, cpk, prng=prng).encrypt(pt)
    # a toy ring cannot hold statistical smudging: the opt-in renyi notion at its minimum lambda
    smudging = Smudging(1, notion="renyi", lam=32)
    cd = CollectiveDecrypt(ctx, NoiseEstimate.fresh(params, 2), peers=2, smudging=smudging)
    dshares = [pa.decryption_share(cd, cct) for pa in parties]
    out = {
        "prod": prod.data,
        "rot": rot.data,
        "low": low.data,
        "dec_prod": be.decode(dec.decrypt(prod)),
        "dec_rot": be.decode(dec.decrypt(rot)),
        "dec_low": be.decode(dec.decrypt(low)),
        "cpk": cpk.data,
        "cct": cct.data,
        "dec_collective": be.decode(cd.decrypt(cct, cd.aggregate(dshares))),
        "sk": sk.data,
        "pk": pk.data,
        "ct": ct.data,
        "ct_sym": ct2.data,
        "sum": total.data,
        "dec": be.decode(dec.decrypt(ct)),
        "dec_sum": be.decode(dec.decrypt(total)),
    }
    return params, {k: backend.to_numpy(v) for k, v in out.items()}


def test_bfv_end_to_end_cpu_equals_cuda(backend_name):
    """Keys, encryption, sums, HPS multiplication, relinearization, rotation, modulus switching
    and the multiparty CKG + collective decryption: the CUDA kernels give the CPU's bits."""
    from gpubfv import Backend

    gpu = Backend("cuda-sim" if SIM else "cuda")
    cpu = Backend("cpu")
    seed = bytes(range(32))
    rng = np.random.default_rng(5)
    t_guess = 1 << 16  # |values| well inside any 17-bit t
    values = rng.integers(-(t_guess // 8), t_guess // 8, 16, dtype=np.int64)
    params, ref = _scheme_run(cpu, seed, values)
    _, got = _scheme_run(gpu, seed, values)
    for name in ref:
        assert np.array_equal(got[name], ref[name]), name
    t = params.t
    assert np.array_equal(ref["dec"], values)
    assert np.array_equal(got["dec"], values)
    assert np.array_equal(got["dec_sum"], 3 * values)
    prod = np.mod(values * values, t)
    assert np.array_equal(got["dec_prod"], np.where(prod > t // 2, prod - t, prod))
    half = values.size // 2
    rot = np.concatenate([np.roll(values[:half], -1), np.roll(values[half:], -1)])
    assert np.array_equal(got["dec_rot"], rot)
    assert np.array_equal(got["dec_low"], values)
    assert np.array_equal(got["dec_collective"], values)


# ---------------------------------------------------------------- backend selection


def test_backend_cuda_unavailable_raises_clearly():
    from gpubfv.backend import Backend, BackendUnavailable, _cuda_available

    if _cuda_available()[0]:  # pragma: no cover - a GPU machine
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailable, match="backend 'cuda' requested but unavailable"):
        Backend("cuda")


def test_backend_cuda_sim_needs_the_flag(monkeypatch):
    from gpubfv.backend import Backend, BackendUnavailable

    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    with pytest.raises(BackendUnavailable, match="NUMBA_ENABLE_CUDASIM=1"):
        Backend("cuda-sim")
    if SIM:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
        b = Backend("cuda-sim")
        assert b.xp is np and b.k.__name__ == "kernels.cuda" and not b.is_gpu
