"""The distributed discrete Gaussian: the exact sampler through RandomBits (moments, pmf, tails;
its components are tested in test_dgauss_kernel.py), rotation and
conditional rounding, the KLS accountant against direct summation of the Renyi divergence,
and encrypted-dp = its plaintext reference bit for bit. Fixed seeds: no test can flake."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dmhe.privacy import DistributedDiscreteGaussian, RandomBits, ddg_cdp
from dmhe.privacy.discrete_gaussian import MAX_VARIANCE, discrete_gaussian, discrete_gaussian_pmf
from dmhe.privacy.rotation import (
    conditional_round,
    fwht,
    rotate,
    rotation_signs,
    rounding_norm_bound_sq,
    unrotate,
)


def _bits(label: int) -> RandomBits:
    return RandomBits(bytes([label]) * 32)


def _chi2_pvalue(samples: torch.Tensor, pmf: np.ndarray, support: int) -> float:
    """Chi-square goodness of fit over [-support, support], the tails pooled in one cell each."""
    x = samples.numpy()
    n = x.size
    obs = np.array([np.sum(x < -support)] + [np.sum(x == v) for v in range(-support, support + 1)])
    obs = np.append(obs, np.sum(x > support))
    inner = pmf[1:-1]
    exp = np.concatenate([[pmf[0]], inner, [pmf[-1]]]) * n
    keep = exp >= 5
    return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


def _dg_cells(s: float, support: int) -> np.ndarray:
    """pmf of N_Z(0, s) in cells (< -support, each integer, > support), exact to 1e-15."""
    wide = support * 4 + 60
    p = discrete_gaussian_pmf(s, wide).numpy()
    mid = wide
    inner = p[mid - support : mid + support + 1]
    tail = p[: mid - support].sum()
    return np.concatenate([[tail], inner, [tail]])


def test_below_is_uniform():
    b = _bits(1)
    for m in (3, 7, 1000):
        x = b.below(m, 60000)
        assert int(x.min()) >= 0 and int(x.max()) < m
        counts = np.bincount(x.numpy(), minlength=m)
        assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("s", [1, 2, 50, 400], ids=lambda s: f"s={s}")
def test_discrete_gaussian_pmf_and_moments(s):
    n = 60000
    x = discrete_gaussian(_bits(4), s, n)
    support = math.ceil(3 * math.sqrt(s))
    assert _chi2_pvalue(x, _dg_cells(s, support), support) > 1e-4
    p = discrete_gaussian_pmf(s, 40 * math.isqrt(s) + 40).double()
    v = torch.arange(-(p.numel() // 2), p.numel() // 2 + 1, dtype=torch.float64)
    var = float((p * v * v).sum())
    assert abs(float(x.double().mean())) < 5 * math.sqrt(var / n)
    assert float(x.double().var()) == pytest.approx(var, rel=5 * math.sqrt(2 / n))


def test_discrete_gaussian_tail_and_large_variance():
    s = 100
    x = discrete_gaussian(_bits(5), s, 100000)
    p = _dg_cells(s, 39)
    tail_p = 2 * p[0]  # P(|X| >= 40): 4 sigma
    count = int((x.abs() >= 40).sum())
    assert abs(count - 1e5 * tail_p) <= 5 * math.sqrt(1e5 * tail_p) + 2
    big = discrete_gaussian(_bits(6), MAX_VARIANCE, 20000).double()
    assert float(big.var()) / MAX_VARIANCE == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError):
        discrete_gaussian(_bits(6), MAX_VARIANCE + 1, 1)


def test_streams_are_reproducible_and_keyed():
    a = discrete_gaussian(_bits(7), 9, 1000)
    assert torch.equal(a, discrete_gaussian(_bits(7), 9, 1000))
    assert not torch.equal(a, discrete_gaussian(_bits(8), 9, 1000))
    assert not torch.equal(RandomBits().words(8), RandomBits().words(8))  # os.urandom keys


# ------------------------------------------------------------------ rotation and rounding


def test_fwht_matches_the_hadamard_matrix_and_rotation_inverts():
    n = 16
    h = torch.tensor([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)])
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fwht(x), h.double() @ x)
    signs = rotation_signs(b"s", 3, 64)
    assert torch.equal(signs, rotation_signs(b"s", 3, 64))
    assert not torch.equal(signs, rotation_signs(b"s", 4, 64))
    v = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = rotate(v, signs)
    assert float(torch.linalg.vector_norm(y)) == pytest.approx(float(torch.linalg.vector_norm(v)))
    assert torch.allclose(unrotate(y, signs, 50), v)


def test_conditional_rounding_enforces_the_bound():
    d, c = 256, 64.0
    z = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = z * (c / float(torch.linalg.vector_norm(z)))
    bound = rounding_norm_bound_sq(c, d, math.exp(-0.5))
    total = torch.zeros(d, dtype=torch.float64)
    bits = _bits(9)
    for _ in range(200):
        r, tries = conditional_round(z, bound, bits, max_tries=100)
        assert int((r * r).sum()) <= bound and tries >= 1
        assert torch.all((r - torch.floor(z)).abs() <= 1)
        total += r.double()
    assert float((total / 200 - z).abs().max()) < 0.2  # unbiased: mean of 200 within 0.2
    with pytest.raises(RuntimeError):
        conditional_round(z, c * c / 4, bits, max_tries=3)


# ------------------------------------------------------------------ accountant


def _renyi(p: np.ndarray, shift: int, alpha: float) -> float:
    """D_alpha(P(. - shift) || P) by direct summation over the (wide) support."""
    q = np.roll(p, shift)
    q[:shift] = 0
    m = (q > 0) & (p > 0)
    terms = alpha * np.log(q[m]) + (1 - alpha) * np.log(p[m])  # log space: no overflow
    top = terms.max()
    return float((top + np.log(np.sum(np.exp(terms - top)))) / (alpha - 1))


@pytest.mark.parametrize(
    "s,n,delta2", [(1, 1, 1), (4, 1, 2), (1, 3, 1), (0.5, 4, 1), (9, 2, 3)], ids=str
)
def test_ddg_bound_against_direct_summation(s, n, delta2):
    """KLS Theorem 2 in one dimension: the exact sum of n discrete Gaussians (by convolution)
    shifted by the sensitivity has Renyi divergence at most alpha * eps^2 / 2 at every order."""
    support = math.ceil(12 * math.sqrt(n * s)) + 4  # mass beyond: < 1e-30
    p = discrete_gaussian_pmf(s, support).numpy()
    total = p
    for _ in range(n - 1):
        total = np.convolve(total, p)
    eps = ddg_cdp(variance=s, components=n, l2=delta2, dim=1)
    gauss = delta2**2 / (n * s)  # the continuous Gaussian's eps^2 with the same variance
    for alpha in (1.5, 2.0, 4.0, 8.0):
        exact = _renyi(total, delta2, alpha)
        assert exact <= alpha * eps * eps / 2 * (1 + 1e-9)
        if s >= 1:  # no loose bound either: within 2% of the Gaussian's alpha*D^2/(2 n s)
            assert alpha * eps * eps / 2 <= alpha * gauss / 2 * 1.02 + 1e-12


def test_ddg_tau_grows_for_small_variance():
    assert ddg_cdp(variance=1e4, components=8, l2=10, dim=1000) == pytest.approx(
        10 / math.sqrt(8e4)
    )
    assert ddg_cdp(variance=0.1, components=8, l2=10, dim=1000) > 10 / math.sqrt(0.8)


def test_ddg_calibration_and_withheld_noise():
    m = DistributedDiscreteGaussian.calibrate(
        peers=4, clip=1.0, dim=1000, rounds=10, delta=1e-5, epsilon=4.0
    )
    assert m.epsilon(1e-5, 10) <= 4.0
    assert m.epsilon(1e-5, 10) > 3.9
    assert m.epsilon(1e-5, 10, withheld=1) > m.epsilon(1e-5, 10)
    assert m.epsilon(1e-5, 10, withheld=4) == math.inf
    assert m.value_bits() < 30 and m.sum_bound() >= m.peers * math.floor(m.l2)
    z = DistributedDiscreteGaussian.calibrate(
        peers=4, clip=1.0, dim=1000, rounds=10, delta=1e-5, noise_multiplier=2.0
    )
    assert z.noise_multiplier() == pytest.approx(2.0, rel=1e-3)
    huge = DistributedDiscreteGaussian.calibrate(
        peers=2, clip=1.0, dim=1 << 16, rounds=1, delta=1e-5, noise_multiplier=60.0
    )
    assert huge.pieces > 1 and huge.variance <= MAX_VARIANCE  # split into exact components


def test_ddg_encode_decode_without_noise_is_the_rounded_average():
    m = DistributedDiscreteGaussian(peers=2, clip=1.0, dim=100, norm_bits=12, variance=1)
    x = torch.randn(100, generator=torch.Generator().manual_seed(3))
    x = x / torch.linalg.vector_norm(x)
    enc = [m.encode(x, round_index=1, bits=_bits(10 + i)) for i in range(2)]
    assert enc[0].numel() == 128 and enc[0].dtype == torch.int64
    avg = m.decode(enc[0] + enc[1], 2, round_index=1)
    # error: rounding (<= 1 per coordinate) and noise (s = 1) in units of 2^-12
    assert float((avg - x.double()).abs().max()) < 8 * 2**-12


# ------------------------------------------------------------------ through the trainer


def test_encrypted_dp_equals_plaintext_integer_dp_bit_for_bit():
    from smallcfg import small_fields  # tests/ is on sys.path (conftest's folder)

    from dmhe.trainer import TrainConfig, Trainer

    small = small_fields(peers=2, rounds=1, local_steps=1, dp_epsilon=4.0, dp_reproducible=True)

    params = {}
    for mode in ("ddp-plaintext", "encrypted-dp"):
        tr = Trainer(TrainConfig(mode=mode, **small))
        metrics = tr.train()
        params[mode] = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
        assert metrics[-1]["dp_epsilon"] <= 4.0
    assert torch.equal(params["ddp-plaintext"], params["encrypted-dp"])
    tr = Trainer(TrainConfig(mode="ddp-plaintext", **{**small, "seed": 1}))
    tr.train()
    other = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
    assert not torch.equal(other, params["ddp-plaintext"])
