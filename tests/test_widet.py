"""Wide plaintext modulus t = 2^k (62 <= k <= 256): parameters, exact scale-and-round against
Python integers, CPU vs CUDA kernels bit for bit, encoders, the scheme and a K = 4 multiparty
round with 8 sub-values of 20 bits per coefficient at t = 2^160.

Ids spell the case out: `k=160-L=7` is t = 2^160 over 7 ciphertext primes.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cpu.widet as KW
from gpubfv import (
    CoefficientEncoder,
    Decryptor,
    Encryptor,
    Evaluator,
    KeyGenerator,
    ParameterError,
    Parameters,
    ParametersLiteral,
)
from gpubfv.backend import get_backend
from gpubfv.ciphertext import Plaintext
from gpubfv.context import Context
from gpubfv.encoder import EncodingError, wide_negate
from gpubfv.keys import GaloisKeys, SecretKey
from gpubfv.mhe import (
    CollectiveDecrypt,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    ShareJournal,
    Smudging,
)
from gpubfv.params import MAX_WIDE_PLAIN_BITS
from gpubfv.ring.basis import RNSBasis
from gpubfv.ring.modmath import generate_ntt_primes
from gpubfv.ring.rns import ScaleRoundToT, WidePlainScaling, float_rounding_slack

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
KS = (62, 64, 100, 128, 160, 200, 256)
N_SMALL = 64


def words_to_ints(words: np.ndarray) -> list[int]:
    """(W, N) uint32 little-endian words -> N Python integers."""
    w = [[int(v) for v in row] for row in words]
    return [sum(w[j][n] << (32 * j) for j in range(len(w))) for n in range(words.shape[-1])]


def ints_to_words(vals: list[int], words: int) -> np.ndarray:
    """N Python integers -> (W, N) uint32 little-endian words."""
    return np.array(
        [[(v >> (32 * j)) & 0xFFFFFFFF for v in vals] for j in range(words)], dtype=np.uint32
    )


def basis_for(k: int, extra: int, n: int = N_SMALL, bits: tuple[int, ...] = (30, 29, 28)):
    """Primes of mixed sizes whose product exceeds 2^(k + 3 + 30 * extra)."""
    sizes, total = [], 0
    while total <= k + 3 + 30 * extra:
        b = bits[len(sizes) % len(bits)]
        sizes.append(b)
        total += b - 1
    return RNSBasis(generate_ntt_primes(sizes, n), n, get_backend("cpu"))


def random_residues(rng, moduli, m, n) -> np.ndarray:
    return np.ascontiguousarray(
        np.stack([rng.integers(0, q, (m, n)) for q in moduli], axis=1).astype(np.uint32)
    )


def crt(res: np.ndarray, moduli) -> list[int]:
    """(L, N) residues -> N integers in [0, Q)."""
    big = math.prod(moduli)
    coef = [(big // q) * pow(big // q, -1, q) for q in moduli]
    cols = range(res.shape[-1])
    return [sum(int(res[i, n]) * coef[i] for i in range(len(moduli))) % big for n in cols]


def residues_of(vals: list[int], moduli) -> np.ndarray:
    return np.array([[v % q for v in vals] for q in moduli], dtype=np.uint32)


def check_scale_round(x: np.ndarray, got: np.ndarray, moduli, k: int) -> None:
    """got == round(2^k x / Q) mod 2^k wherever 2^k x / Q is farther than EPS(L) from a
    half-integer, and one of the two neighbours elsewhere (the proven statement)."""
    big, t = math.prod(moduli), 1 << k
    eps = float_rounding_slack(len(moduli))
    for m in range(x.shape[0]):
        for n, (xv, gv) in enumerate(zip(crt(x[m], moduli), words_to_ints(got[m]))):
            exact = (2 * t * xv + big) // (2 * big) % t
            frac = (t * xv % big) / big
            if abs(frac - 0.5) > eps:
                assert gv == exact, (m, n, xv)
            else:
                assert gv in (exact, (exact - 1) % t, (exact + 1) % t)


# ---- parameters ------------------------------------------------------------------------------
LIT = dict(log_n=4, q_bits=(30,) * 7, p_bits=(30,), allow_insecure=True, batching=False)


@pytest.mark.parametrize("k", (62, 160, 200))
def test_t_bits_beyond_61_is_a_power_of_two(k):
    p = Parameters(ParametersLiteral(**{**LIT, "q_bits": (30,) * 9}, t_bits=k))
    assert p.t == 1 << k and p.t_wide and p.t_log2 == k and p.t_words == -(-k // 32)
    assert Parameters(ParametersLiteral(**{**LIT, "q_bits": (30,) * 9}, t=1 << k)).t == p.t
    assert f"t=2^{k}" in p.describe()


@pytest.mark.parametrize(
    "kw,reason",
    [
        (dict(t_bits=160, batching=True), "no-batching"),
        (dict(t=1 << 160, batching=True), "no-batching"),
        (dict(t=(1 << 100) + 1), "plain-modulus"),
        (dict(t=3 << 100), "plain-modulus"),
        (dict(t=1 << 61), "plain-modulus"),
        (dict(t=1 << (MAX_WIDE_PLAIN_BITS + 1)), "plain-modulus"),
        (dict(t_bits=MAX_WIDE_PLAIN_BITS + 1), "plain-size"),
        (dict(t_bits=208), "q-too-small"),  # Q of 210 bits needs more than 2 bits above t
    ],
    ids=lambda v: str(v),
)
def test_wide_t_refusals(kw, reason):
    lit = {**LIT, **kw}
    with pytest.raises(ParameterError) as exc:
        Parameters(ParametersLiteral(**lit))
    assert exc.value.reason == reason


def test_narrow_sets_unchanged():
    lit = ParametersLiteral(
        log_n=4, q_bits=(28, 28, 28), p_bits=(28,), t_bits=17, allow_insecure=True
    )
    p = Parameters(lit)
    assert not p.t_wide and p.t_words == 0 and p.t < 1 << 17


# ---- scale and round against Python integers ---------------------------------------------------
@pytest.mark.parametrize("extra", (0, 2), ids=("Q~t", "Q>t"))
@pytest.mark.parametrize("k", KS, ids=[f"k={k}" for k in KS])
def test_scale_round_matches_big_integers(k, extra):
    rng = np.random.default_rng(k * 7 + extra)
    qb = basis_for(k, extra)
    sc = ScaleRoundToT(qb, 1 << k)
    assert sc.wide and sc.omega32.shape == (-(-k // 32), len(qb))
    x = random_residues(rng, qb.moduli, 3, N_SMALL)
    got = sc(x)
    assert got.shape == (3, -(-k // 32), N_SMALL) and got.dtype == np.uint32
    check_scale_round(x, got, qb.moduli, k)
    # adversarial: 2^k x / Q as close to j + 1/2 as x allows
    big, t = qb.product, 1 << k
    js = [int(v) for v in rng.integers(0, 2**62, N_SMALL)]
    xs = [((2 * j + 1) * big + t) // (2 * t) % big for j in js]
    xa = residues_of(xs, qb.moduli)[None]
    check_scale_round(np.ascontiguousarray(xa), sc(np.ascontiguousarray(xa)), qb.moduli, k)


@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from(KS), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_scale_round_property(k, seed, data):
    qb = basis_for(k, 0, n=16)
    big = qb.product
    xs = data.draw(st.lists(st.integers(0, big - 1), min_size=16, max_size=16))
    x = np.ascontiguousarray(residues_of(xs, qb.moduli)[None])
    check_scale_round(x, ScaleRoundToT(qb, 1 << k)(x), qb.moduli, k)


def expected_add_scaled(acc: np.ndarray, ms: list[int], moduli, k: int) -> np.ndarray:
    big, t = math.prod(moduli), 1 << k
    out = np.empty_like(acc)
    for n, m in enumerate(ms):
        w = big * m % t
        c = w if w <= t // 2 else w - t
        r = (big * m - c) // t
        assert abs(2 * (big * m - r * t)) <= t  # |Q m / t - r| <= 1/2
        for i, q in enumerate(moduli):
            out[i, n] = (int(acc[i, n]) + r) % q
    return out


@pytest.mark.parametrize("k", KS, ids=[f"k={k}" for k in KS])
def test_add_scaled_plain_matches_big_integers(k):
    rng = np.random.default_rng(k)
    qb = basis_for(k, 1)
    sc = WidePlainScaling(qb, 1 << k)
    t = 1 << k
    ms = [int.from_bytes(rng.bytes(32), "little") % t for _ in range(N_SMALL - 4)]
    ms += [0, t // 2, t // 2 + 1, t - 1]  # the centring edges
    m = ints_to_words(ms, sc.words)[None]
    acc = random_residues(rng, qb.moduli, 1, N_SMALL)
    want = expected_add_scaled(acc[0], ms, qb.moduli, k)
    sc(np.ascontiguousarray(m), acc)
    assert np.array_equal(acc[0], want)


@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from(KS), data=st.data())
def test_add_scaled_plain_property(k, data):
    qb = basis_for(k, 0, n=16)
    sc = WidePlainScaling(qb, 1 << k)
    ms = data.draw(st.lists(st.integers(0, (1 << k) - 1), min_size=16, max_size=16))
    acc = np.zeros((1, len(qb), 16), dtype=np.uint32)
    sc(np.ascontiguousarray(ints_to_words(ms, sc.words)[None]), acc)
    assert np.array_equal(acc[0], expected_add_scaled(acc[0] * 0, ms, qb.moduli, k))


# ---- CUDA kernels bit for bit (simulator in CI, the GPU with --backend cuda) --------------------
@pytest.fixture
def cuda_widet():
    if not SIM:  # pragma: no cover - real GPU run
        pytest.importorskip("cupy")
    import kernels.cuda.widet as GW
    from kernels.cuda import _common as GC
    from kernels.cuda._sigs import SIGNATURES

    GC.RECORDED = set()
    yield GW
    seen, GC.RECORDED = GC.RECORDED, None
    known = {(name, sig) for (_, name), sig in SIGNATURES.items()}
    assert seen and not sorted(s for s in seen if s not in known)


def _dev(a):
    if SIM:
        return np.ascontiguousarray(a).copy()
    import cupy  # pragma: no cover

    return cupy.asarray(a)  # pragma: no cover


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def test_cuda_widet_has_the_cpu_api():
    import inspect

    import kernels.cuda.widet as GW

    assert sorted(GW.__all__) == sorted(KW.__all__)
    for name in KW.__all__:
        cpu = list(inspect.signature(getattr(KW, name)).parameters)
        assert list(inspect.signature(getattr(GW, name)).parameters) == cpu, name


# batching (M = 2) at two widths; the widest t (2^256, the slowest case in the simulator) once
CUDA_CASES = [(62, 3, 2), (100, 1, 1), (160, 2, 2), (256, 0, 1)]


@pytest.mark.parametrize(
    "k,extra,M", CUDA_CASES, ids=[f"k={k}-extra={e}-M={m}" for k, e, m in CUDA_CASES]
)
def test_cuda_kernels_bit_identical(cuda_widet, k, extra, M):
    rng = np.random.default_rng(k + M)
    n = 40  # not a multiple of the simulator's 32 threads per block
    qb = basis_for(k, extra, n=n)
    sc = ScaleRoundToT(qb, 1 << k)
    x = random_residues(rng, qb.moduli, M, n)
    want = sc(x)
    out = _dev(np.full(want.shape, 0xDEADBEEF, dtype=np.uint32))
    cuda_widet.wide_scale_round(_dev(x), sc, out)
    assert np.array_equal(_host(out), want)

    ps = WidePlainScaling(qb, 1 << k)
    m = rng.integers(0, 2**32, (M, ps.words, n), dtype=np.uint64).astype(np.uint32)
    acc = random_residues(rng, qb.moduli, M, n)
    want_acc = acc.copy()
    KW.wide_add_scaled_plain(m, ps, want_acc)
    got_acc = _dev(acc)
    cuda_widet.wide_add_scaled_plain(_dev(m), ps, got_acc)
    assert np.array_equal(_host(got_acc), want_acc)

    for width in (1, 20, 33, min(63, k // 2)):
        pack = k // width
        v = rng.integers(0, 1 << width, (M, pack * n - 5), dtype=np.uint64).astype(np.int64)
        words = np.zeros((M, ps.words, n), dtype=np.uint32)
        KW.wide_pack(v, pack, width, words)
        got_w = _dev(np.full(words.shape, 0xDEADBEEF, dtype=np.uint32))
        cuda_widet.wide_pack(_dev(v), pack, width, got_w)
        assert np.array_equal(_host(got_w), words), width
        back = np.empty((M, pack * n), dtype=np.int64)
        KW.wide_unpack(words, pack, width, back)
        assert np.array_equal(back[:, : v.shape[1]], v) and not back[:, v.shape[1] :].any()
        got_b = _dev(np.full(back.shape, -7, dtype=np.int64))
        cuda_widet.wide_unpack(_dev(words), pack, width, got_b)
        assert np.array_equal(_host(got_b), back), width


# ---- encoders ----------------------------------------------------------------------------------
def wide_ctx(k: int, q_count: int = 7, log_n: int = 4) -> Context:
    lit = ParametersLiteral(
        log_n=log_n, q_bits=(30,) * q_count, p_bits=(30,), t_bits=k, batching=False,
        allow_insecure=True,
    )  # fmt: skip
    return Context(Parameters(lit), "cpu")


@settings(max_examples=30, deadline=None)
@given(k=st.sampled_from((62, 64, 100, 160)), width=st.integers(1, 63), seed=st.integers(0, 2**31))
def test_packed_encode_decode_roundtrip(k, width, seed):
    ctx = wide_ctx(k, q_count=(k + 40) // 30 + 1)
    pack = max(2, k // width) if width * 2 <= k else 2
    if pack * width > k:
        return
    enc = CoefficientEncoder(ctx, pack=pack, width=width)
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 1 << width, (2, pack * ctx.n - 3), dtype=np.uint64).astype(np.int64)
    pt = enc.encode(v)
    assert pt.data.shape == (2, ctx.params.t_words, ctx.n) and pt.batch_shape == (2,)
    got = enc.decode(pt)
    assert np.array_equal(got[:, : v.shape[1]], v) and not got[:, v.shape[1] :].any()
    # the packed integer is sum_j v_j 2^(j width)
    full = np.concatenate([v, np.zeros((2, 3), np.int64)], axis=1).reshape(2, pack, ctx.n)
    ints = words_to_ints(pt.data[1])
    assert ints[5] == sum(int(full[1, j, 5]) << (j * width) for j in range(pack))


@settings(max_examples=30, deadline=None)
@given(
    k=st.sampled_from(KS), vals=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=16, max_size=16)
)
def test_pack1_signed_roundtrip_and_negate(k, vals):
    ctx = wide_ctx(k, q_count=k // 30 + 2)
    enc = CoefficientEncoder(ctx)
    pt = enc.encode(np.array(vals, dtype=np.int64))
    t = 1 << k
    assert words_to_ints(pt.data) == [v % t for v in vals]
    if k > 64 or all(abs(v) < 1 << (k - 1) for v in vals):
        assert enc.decode(pt).tolist() == vals
    neg = wide_negate(pt.data, ctx.params, np)
    assert words_to_ints(neg) == [-v % t for v in vals]
    short = enc.encode(np.array(vals[:5], dtype=np.int64))  # zero-padded to N coefficients
    assert (
        short.data.dtype == np.uint32
        and words_to_ints(short.data) == [v % t for v in vals[:5]] + [0] * 11
    )


def test_pack1_decode_refuses_values_beyond_int64():
    ctx = wide_ctx(160)
    pt = Plaintext(ctx.params, ints_to_words([1 << 70] + [0] * 15, 5))
    with pytest.raises(EncodingError, match="does not fit int64"):
        CoefficientEncoder(ctx).decode(pt)
    with pytest.raises(EncodingError, match="sub-values must lie"):
        CoefficientEncoder(ctx, pack=8, width=20).encode(np.array([1 << 20]))
    with pytest.raises(EncodingError, match="do not fit"):
        CoefficientEncoder(ctx, pack=9, width=20)
    with pytest.raises(ValueError, match="malformed wide plaintext"):
        Encryptor(ctx, KeyGenerator(ctx).gen_secret_key()).encrypt(
            Plaintext(ctx.params, np.zeros(16, np.uint64))
        )


# ---- the scheme ---------------------------------------------------------------------------------
def test_single_key_pack8x20_sum_add_sub_neg_rotate_modswitch():
    ctx = wide_ctx(160, q_count=8, log_n=5)
    p, n = ctx.params, ctx.n
    kg = KeyGenerator(ctx)
    sk = kg.gen_secret_key()
    enc = CoefficientEncoder(ctx, pack=8, width=20)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1 << 17, (5, 8 * n))
    e, d = Encryptor(ctx, kg.gen_public_key(sk)), Decryptor(ctx, sk)
    es = Encryptor(ctx, sk)
    cts = e.encrypt(enc.encode(x))
    assert np.array_equal(enc.decode(d.decrypt(cts)), x)
    assert np.array_equal(enc.decode(d.decrypt(es.encrypt(enc.encode(x[0])))), x[0])
    ev = Evaluator(ctx)
    total = ev.sum(cts)
    assert np.array_equal(enc.decode(d.decrypt(total)), x.sum(0))
    assert np.array_equal(
        enc.decode(d.decrypt(ev.add_plain(total, enc.encode(x[0])))), x.sum(0) + x[0]
    )
    diff = ev.sub_plain(total, enc.encode(x[1]))
    assert np.array_equal(enc.decode(d.decrypt(diff)), x.sum(0) - x[1])
    assert np.array_equal(enc.decode(d.decrypt(ev.sub(total, cts[2]))), x.sum(0) - x[2])
    e1 = CoefficientEncoder(ctx)
    v = rng.integers(-(2**40), 2**40, n)
    cv = e.encrypt(e1.encode(v))
    assert np.array_equal(e1.decode(d.decrypt(ev.neg(cv))), -v)
    low = ev.mod_switch_to(cv, 7)
    assert np.array_equal(e1.decode(d.decrypt(low)), v)
    # rotation X -> X^g (a key switch): coefficient i moves to i*g mod 2N with a sign
    g = 5
    gk = GaloisKeys(p, {g: kg.gen_galois_key(sk, g)})
    rot = Evaluator(ctx, galois_keys=gk).apply_galois(cv, g)
    want = np.zeros(n, dtype=np.int64)
    idx = (np.arange(n) * g) % (2 * n)
    want[idx % n] = np.where(idx >= n, -v, v)
    assert np.array_equal(e1.decode(d.decrypt(rot)), want)
    with pytest.raises(ValueError, match="needs a prime t"):
        ev.mul(cv, cv)
    with pytest.raises(ValueError, match="needs a prime t"):
        ev.mul_plain(cv, e1.encode(v))


def test_plaintext_sum_wrapping_mod_t_is_exact():
    # the exact scaling makes a wrap of the packed sum mod 2^k cost nothing (WidePlainScaling)
    ctx = wide_ctx(100, q_count=6)
    kg = KeyGenerator(ctx)
    sk = kg.gen_secret_key()
    e, d, ev = Encryptor(ctx, kg.gen_public_key(sk)), Decryptor(ctx, sk), Evaluator(ctx)
    enc = CoefficientEncoder(ctx)
    big = np.full(ctx.n, 2**62, dtype=np.int64)
    total = ev.sum(e.encrypt(enc.encode(np.stack([big] * 4))))  # 2^64 mod 2^100: no wrap
    assert words_to_ints(d.decrypt(total).data) == [1 << 64] * ctx.n
    ctx2 = wide_ctx(62, q_count=4)
    kg2 = KeyGenerator(ctx2)
    sk2 = kg2.gen_secret_key()
    e2, d2 = Encryptor(ctx2, kg2.gen_public_key(sk2)), Decryptor(ctx2, sk2)
    c = Evaluator(ctx2).sum(e2.encrypt(CoefficientEncoder(ctx2).encode(np.stack([big] * 5))))
    assert words_to_ints(d2.decrypt(c).data) == [(5 << 62) % (1 << 62)] * ctx2.n


# ---- K = 4 parties, t = 2^160, 8 sub-values of 20 bits, collective decryption ----------------
E2E = [
    # tiny insecure ring, renyi smudging (fast); N = 2^14 128-bit set with the default
    # statistical smudging (lambda = 40, D = 16): Q' >= 2^237 by the noise model, 8 x 30 bits
    ("logN=6-L=8-renyi", 6, False, Smudging(1 << 20, notion="renyi")),
    ("logN=14-L=8-statistical", 14, True, Smudging(16)),
]


@pytest.mark.parametrize("case", E2E, ids=[c[0] for c in E2E])
def test_multiparty_k4_pack8x20_collective_decrypt_equals_numpy_sum(case):
    from gpubfv.ring.sampling import PRNG

    _, log_n, secure, smudging = case
    k_peers = 4
    lit = ParametersLiteral(
        log_n=log_n, q_bits=(30,) * 8, p_bits=(30,), t_bits=160, batching=False,
        allow_insecure=not secure,
    )  # fmt: skip
    p = Parameters(lit)
    ctx = Context(p, "cpu")
    rngs = [PRNG(bytes([i + 1, 9]) * 16) for i in range(k_peers)]
    sks = [KeyGenerator(ctx, prng=r).gen_secret_key() for r in rngs]
    parties = [
        Party(ctx, sk, peer_id=i, journal=ShareJournal.in_memory(unsafe_not_persistent=True),
              prng=r)
        for i, (sk, r) in enumerate(zip(sks, rngs))
    ]  # fmt: skip
    ckg = PublicKeyGen(ctx, peers=k_peers)
    crp = ckg.sample_crp(b"\x08" * 32)
    pk = ckg.finalize(ckg.aggregate([pa.public_key_share(ckg, crp) for pa in parties]), crp)
    enc = CoefficientEncoder(ctx, pack=8, width=20)
    rows = 3 if log_n < 10 else 1
    data = np.random.default_rng(44).integers(0, 1 << 18, (k_peers, rows, 8 * p.n))
    cts = [Encryptor(ctx, pk, prng=rngs[i]).encrypt(enc.encode(data[i])) for i in range(k_peers)]
    total = Evaluator(ctx).sum(cts)
    noise = NoiseEstimate.fresh(p, k_peers).summed(k_peers)
    cd = CollectiveDecrypt(ctx, noise, peers=k_peers, smudging=smudging)
    agg = cd.aggregate([pa.decryption_share(cd, total) for pa in parties])
    got = enc.decode(cd.decrypt(total, agg))
    assert got.shape == data.sum(0).shape and np.array_equal(got, data.sum(0))
    # the ideal key decrypts the same sum (sk_ideal = sum s_i)
    sk_ideal = SecretKey(p, ctx.qp.sum(np.stack([s.data for s in sks])))
    assert np.array_equal(enc.decode(Decryptor(ctx, sk_ideal).decrypt(total)), data.sum(0))


# ---- parameters on the wire -------------------------------------------------------------------
def test_wide_parameters_roundtrip_and_fuzzed_t_refused():
    from gpubfv.serialization import SerializationError, from_bytes, to_bytes

    p = wide_ctx(160).params
    blob = to_bytes(p)
    back = from_bytes(None, blob, allow_insecure=True)
    assert back.t == 1 << 160 and back.fingerprint == p.fingerprint and back.t_wide
    body_at = blob.index(b"{")
    body = blob[body_at:-8]
    t_field = b'"t":' + str(1 << 160).encode()
    assert t_field in body
    cases = [((1 << 160) + 1, "not 2"), (3 << 159, "not 2"), (1 << 257, "'t' holds")]
    cases += [(-(1 << 160), "'t' holds"), ("1" * 5000, "not JSON")]
    for bad_t, why in cases:
        bad = body.replace(t_field, b'"t":' + str(bad_t).encode())
        with pytest.raises(SerializationError, match=why):
            from_bytes(None, _reframe(blob, bad), allow_insecure=True)


def _reframe(blob: bytes, body: bytes) -> bytes:
    """The frame `blob` with another body: length and checksum recomputed."""
    import struct

    from gpubfv.serialization import format as fmt

    head = bytearray(blob[: fmt.HEADER_BYTES])
    struct.pack_into("<I", head, fmt.LENGTH_OFFSET, len(body))
    return bytes(head) + body + fmt.checksum(bytes(head) + body)
