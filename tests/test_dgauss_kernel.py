"""The exact discrete Gaussian kernel (kernels.cpu.dgauss, its CUDA twin): the component
samplers against their distributions, moments and tails at a large variance, the lane layout
(deterministic, lanes independent of each other and of the lane count), CPU = CUDA simulator
bit for bit, the integer-range bound and the refusals. Fixed seeds: no test can flake."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy import stats

from gpubfv.backend import get_backend
from kernels.cpu import dgauss as D

KEY = np.arange(1, 9, dtype=np.uint32) * np.uint32(0x9E3779B9)


def _nonce(label: int) -> np.ndarray:
    return np.array([label, 0, 0x44475353], dtype=np.uint32)


def _chi2(x: np.ndarray, cells: np.ndarray, support: int) -> float:
    """Chi-square p-value over (< -support, each integer, > support); cells sum to 1."""
    obs = [np.sum(x < -support)] + [np.sum(x == v) for v in range(-support, support + 1)]
    obs = np.array(obs + [np.sum(x > support)], dtype=np.float64)
    exp = cells * x.size
    keep = exp >= 5
    return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


def _dg_pmf(s: float, support: int) -> np.ndarray:
    k = np.arange(-support, support + 1, dtype=np.float64)
    w = np.exp(-(k * k) / (2.0 * s))
    return w / w.sum()


@pytest.mark.parametrize(
    "num,den",
    [(3, 7), (7, 7), (17, 5), (0, 4), ((3 << 40) // 7, 1 << 40), (5 << 41, 3 << 40)],
    ids=["3/7", "7/7", "17/5", "0/4", "3/7-wide", "10/3-wide"],
)
def test_bernoulli_exp_frequency(num, den):
    """Bernoulli(exp(-num/den)): 32-bit and 64-bit (den > 2^32) words, gamma <= 1 and > 1."""
    n = 80000
    hits = int(D.sample_bernoulli_exp(KEY, _nonce(1), num, den, n).sum())
    p = math.exp(-num / den)
    assert abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_discrete_laplace_pmf():
    t, support = 3, 12
    x = D.sample_discrete_laplace(KEY, _nonce(2), t, 60000)
    k = np.arange(-support, support + 1)
    z = (1 - math.exp(-1 / t)) / (1 + math.exp(-1 / t))  # normaliser of exp(-|k|/t) on Z
    tail = z * math.exp(-(support + 1) / t) / (1 - math.exp(-1 / t))
    cells = np.concatenate([[tail], z * np.exp(-np.abs(k) / t), [tail]])
    assert _chi2(x, cells, support) > 1e-4


def test_small_variance_chi_square():
    s, support = 3, 6
    x = D.sample_discrete_gaussian(KEY, _nonce(3), s, 60000)
    wide = _dg_pmf(s, 60)
    mid = 60
    tail = wide[: mid - support].sum()
    cells = np.concatenate([[tail], wide[mid - support : mid + support + 1], [tail]])
    assert _chi2(x, cells, support) > 1e-4


def test_large_variance_moments_and_tails():
    """At s = 10^6 (the benchmark's) the discrete variance is s to 1e-300: test mean, variance,
    and P(|X| > 3 sigma) against the exact pmf."""
    s, n = 10**6, 200000
    x = D.sample_discrete_gaussian(KEY, _nonce(4), s, n).astype(np.float64)
    assert abs(x.mean()) < 5 * math.sqrt(s / n)
    assert x.var() == pytest.approx(s, rel=5 * math.sqrt(2 / n))
    p = _dg_pmf(s, 12000)
    tail_p = float(p[: 12000 - 3000].sum() * 2)  # P(|X| > 3000)
    count = int((np.abs(x) > 3000).sum())
    assert abs(count - n * tail_p) <= 5 * math.sqrt(n * tail_p) + 2


def test_lane_layout_is_deterministic_and_lanes_independent():
    a = D.sample_discrete_gaussian(KEY, _nonce(5), 50, 1000)
    assert np.array_equal(a, D.sample_discrete_gaussian(KEY, _nonce(5), 50, 1000))
    assert not np.array_equal(a, D.sample_discrete_gaussian(KEY, _nonce(6), 50, 1000))
    assert D.lanes_for(1000) == 8 and D.lanes_for(128) == 1 and D.lanes_for(1) == 1
    assert D.lanes_for(D.MAX_COUNT) == D.MAX_LANES
    # lane l reads only its own counter range: its samples do not depend on the lane count
    five = D.sample_discrete_gaussian(KEY, _nonce(7), 50, 500, lanes=5)
    for lane in (0, 3):
        alone = D.sample_discrete_gaussian(KEY, _nonce(7), 50, 500, lanes=8)[lane::8]
        assert np.array_equal(five[lane::5][:62], alone[:62])
    assert not np.array_equal(five[0::5][:50], five[1::5][:50])
    # one lane's samples are a prefix of the same lane's longer run
    assert np.array_equal(five, D.sample_discrete_gaussian(KEY, _nonce(7), 50, 1000, lanes=5)[:500])


def test_parallel_and_serial_paths_agree():
    """Counts from PARALLEL_MIN_COUNT run the lanes on numba's threads, smaller ones on the
    caller's; chacha20_blocks likewise from 2^16 blocks: the same bits either way."""
    from kernels.cpu import prng

    n = D.PARALLEL_MIN_COUNT
    par = D.sample_discrete_gaussian(KEY, _nonce(13), 50, n)
    t, thr, den, qlb = D.gauss_params(50)
    ser = np.empty(n, dtype=np.int64)
    err = np.zeros(D.lanes_for(n), dtype=np.int64)
    args = (np.int64(50), np.int64(t), np.uint64(thr), np.uint64(den), np.int64(qlb))
    D._gauss_serial(D.lane_template(KEY, _nonce(13), t, den), *args, err.size, ser, err)
    assert np.array_equal(par, ser) and not err.any()
    blocks = prng.chacha20_blocks(KEY, _nonce(13), 5, 1 << 16)  # the parallel path
    one = np.empty_like(blocks)
    prng._chacha_serial(KEY, _nonce(13), np.int64(5), one)
    assert np.array_equal(blocks, one)


def test_cpu_and_cuda_simulator_are_bit_identical():
    """The CUDA twin (numba's simulator here, a GPU under --backend cuda) draws the same bits."""
    from kernels.cuda import _common as C
    from kernels.cuda import dgauss as G
    from kernels.cuda._sigs import SIGNATURES

    C.RECORDED = set()  # the launch signature must be the one compiled statically in CI
    try:
        for s, count, lanes in ((3, 24, 3), (10**6, 16, 2)):
            want = D.sample_discrete_gaussian(KEY, _nonce(8), s, count, lanes=lanes)
            got = C.to_host(G.sample_discrete_gaussian(KEY, _nonce(8), s, count, lanes=lanes))
            assert np.array_equal(got, want), (s, got, want)
        seen = C.RECORDED
    finally:
        C.RECORDED = None
    assert seen == {("_dgauss_kernel", SIGNATURES[("dgauss", "_dgauss_kernel")])}
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - a real GPU
        want = D.sample_discrete_gaussian(KEY, _nonce(9), 10**6, 1 << 16)
        got = C.to_host(G.sample_discrete_gaussian(KEY, _nonce(9), 10**6, 1 << 16))
        assert np.array_equal(got, want)


def test_known_answers():
    """Frozen outputs: the samples are a function of (key, nonce, variance, count) alone, on
    every machine and device, so a change to the algorithm or the keystream layout shows here."""
    n = _nonce(99)
    small = [2, 1, 0, 3, -1, 3, 2, 3, -1, 3, 3, 0]
    assert D.sample_discrete_gaussian(KEY, n, 3, 12).tolist() == small
    mid = [1042, 1258, 323, 1056, -804, 1556]
    assert D.sample_discrete_gaussian(KEY, n, 10**6, 6).tolist() == mid
    assert D.sample_discrete_gaussian(KEY, n, D.MAX_VARIANCE, 4).tolist() == [
        14346, 17324, 4451, 14533,
    ]  # fmt: skip


def test_backend_method_is_the_kernel():
    x = get_backend("cpu").discrete_gaussian(KEY, _nonce(10), 400, 300)
    assert np.array_equal(x, D.sample_discrete_gaussian(KEY, _nonce(10), 400, 300))


def test_dmhe_refuses_the_kernel_bound():
    """dmhe's MAX_VARIANCE (the DDG calibration's) is the kernel's."""
    from dmhe.privacy.discrete_gaussian import MAX_VARIANCE

    assert MAX_VARIANCE == D.MAX_VARIANCE


def test_integer_ranges_at_the_largest_variance():
    """The bounds of the module docstring hold at MAX_VARIANCE and fail just above it."""
    s = D.MAX_VARIANCE
    t, thr, den, qlb = D.gauss_params(s)
    assert den < 1 << 56 and den * 64 < 1 << 62 and qlb >= 64
    assert 2 * (s + 1) * (math.isqrt(s + 1) + 1) ** 2 >= 1 << 56
    assert t * ((1 << 31) + 1) * t + s < 1 << 63  # |Y| t with V <= 2^31, U < t
    assert ((1 << 31) - 1) ** 2 < 1 << 62 and thr == (1 << 32) % t
    x = D.sample_discrete_gaussian(KEY, _nonce(11), s, 20000).astype(np.float64)
    assert x.var() / s == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "args",
    [
        (0, 10),
        (D.MAX_VARIANCE + 1, 10),
        (2.5, 10),
        (5, -1),
        (5, D.MAX_COUNT + 1),
    ],
    ids=["s=0", "s=max+1", "s=2.5", "count=-1", "count=max+1"],
)
def test_refusals(args):
    with pytest.raises(ValueError):
        D.sample_discrete_gaussian(KEY, _nonce(12), *args)


def test_refusals_of_keys_lanes_and_flags():
    with pytest.raises(ValueError):
        D.sample_discrete_gaussian(KEY[:7], _nonce(12), 5, 10)
    with pytest.raises(ValueError):
        D.sample_discrete_gaussian(KEY.astype(np.int64), _nonce(12), 5, 10)
    with pytest.raises(ValueError):
        D.sample_discrete_gaussian(KEY, _nonce(12), 5, 10, lanes=0)
    with pytest.raises(ValueError):
        D.sample_discrete_laplace(KEY, _nonce(12), 0, 10)
    with pytest.raises(ValueError):
        D.sample_bernoulli_exp(KEY, _nonce(12), 1, 1 << 56, 10)
    for flag, words in ((1, "exact"), (2, "keystream")):
        with pytest.raises(RuntimeError, match=words):
            D.raise_on(np.array([0, flag, 0]))
    D.raise_on(np.zeros(3, dtype=np.int64))
    assert D.sample_discrete_gaussian(KEY, _nonce(12), 5, 0).shape == (0,)
