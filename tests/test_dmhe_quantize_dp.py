"""Quantization, the no-wrap check, the Gaussian accountants (Opacus) and noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmhe.privacy import GaussianNoise, RandomBits
from dmhe.privacy.accounting import (
    gaussian_epsilon,
    gaussian_noise_multiplier,
    rdp_to_epsilon,
)
from dmhe.quantize import (
    check_no_wrap,
    clip_coordinates,
    clip_l2,
    dequantize,
    quantization_error_bound,
    quantize,
)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=64),
    st.integers(0, 30),
)
def test_quantization_error_bound(values, f):
    x = torch.tensor(values, dtype=torch.float32)
    err = (dequantize(quantize(x, f), f) - x.double()).abs().max().item()
    assert err <= quantization_error_bound(f)


def test_round_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5])
    assert quantize(x, 0).tolist() == [0, 2, 2, 0, -2]


def test_clip_l2_and_coordinates():
    x = torch.tensor([3.0, 4.0])
    assert torch.linalg.vector_norm(clip_l2(x, 1.0)).item() == pytest.approx(1.0)
    assert clip_l2(torch.tensor([0.3, 0.4]), 1.0).tolist() == pytest.approx([0.3, 0.4])
    assert clip_coordinates(x, 1.0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        clip_l2(x, 0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=32))
def test_clipped_quantized_values_respect_the_wrap_bound(values):
    x = clip_l2(torch.tensor(values, dtype=torch.float32), 0.7)
    assert quantize(x, 16).abs().max().item() <= math.floor(0.7 * 2**16 + 0.5)


def test_check_no_wrap():
    t = 2**32
    assert check_no_wrap(4, 1.0, 16, t) == 4 * 2**16
    check_no_wrap(2**15 - 1, 1.0, 16, t)
    with pytest.raises(ValueError, match="wrap"):
        check_no_wrap(2**15, 1.0, 16, t)  # K*c*2^f == t/2
    with pytest.raises(ValueError):
        check_no_wrap(4, 1.0, 16, t, extra=2**15)  # DP noise headroom counted
    with pytest.raises(ValueError):
        quantize(torch.zeros(1), 60)


# --------------------------------------------------------------------------- accountant


def _analytic_gaussian_delta(mu: float, eps: float) -> float:
    """Exact delta(eps) of a mu-GDP mechanism (Balle and Wang 2018; Dong et al. 2019): the T-fold
    Gaussian mechanism of multiplier sigma is mu-GDP with mu = sqrt(T) / sigma."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)


def _analytic_epsilon(mu: float, delta: float) -> float:
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _analytic_gaussian_delta(mu, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize("sigma,rounds", [(1.0, 1), (2.0, 10), (5.0, 50)], ids=str)
def test_gaussian_accountants_against_the_exact_gaussian(sigma, rounds):
    """Without subsampling the composition is exactly mu-GDP: PRV matches the exact eps, RDP
    is an upper bound within 25%; the closed form a/(2 sigma^2) RDP curve agrees with Opacus."""
    exact = _analytic_epsilon(math.sqrt(rounds) / sigma, 1e-5)
    prv = gaussian_epsilon(noise_multiplier=sigma, steps=rounds, delta=1e-5, accountant="prv")
    rdp = gaussian_epsilon(noise_multiplier=sigma, steps=rounds, delta=1e-5)
    assert prv == pytest.approx(exact, rel=0.02)
    assert exact <= rdp * 1.0001 <= exact * 1.25
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64))
    own = rdp_to_epsilon([rounds * a / (2 * sigma**2) for a in orders], 1e-5, orders)
    assert own == pytest.approx(rdp, rel=1e-6)


def test_gaussian_one_round_known_value():
    # sigma=1, one round, delta=1e-5: exact eps 4.38 (analytic Gaussian); classic RDP
    # conversion min_a a/2 + log(1/delta)/(a-1) = 5.30 at a = 1 + sqrt(2 log 1e5)
    eps = gaussian_epsilon(noise_multiplier=1.0, steps=1, delta=1e-5)
    a = 1 + math.sqrt(2 * math.log(1e5))
    classic = a / 2 + math.log(1e5) / (a - 1)
    assert classic == pytest.approx(5.30, abs=0.01)
    assert _analytic_epsilon(1.0, 1e-5) == pytest.approx(4.38, abs=0.01)
    assert 4.38 <= eps < classic


def test_sampled_gaussian_matches_the_tf_privacy_mnist_example():
    # sigma=1.1, q=256/60000, 60 epochs, delta=1e-5: TF-Privacy's tutorial reports eps ~ 3.0
    # with the classic conversion; Opacus' tighter conversion gives less, PRV less again.
    q, steps = 256 / 60000, 60 * 60000 // 256
    rdp = gaussian_epsilon(noise_multiplier=1.1, steps=steps, delta=1e-5, sample_rate=q)
    prv = gaussian_epsilon(
        noise_multiplier=1.1, steps=steps, delta=1e-5, sample_rate=q, accountant="prv"
    )
    assert 2.3 < prv < rdp < 3.0


def test_epsilon_monotonic():
    e = [gaussian_epsilon(noise_multiplier=s, steps=10, delta=1e-5) for s in (0.5, 1, 2, 4, 8)]
    assert all(x > y for x, y in zip(e, e[1:], strict=False))
    r = [gaussian_epsilon(noise_multiplier=2.0, steps=t, delta=1e-5) for t in (1, 10, 100)]
    assert all(x < y for x, y in zip(r, r[1:], strict=False))
    with pytest.raises(ValueError):
        gaussian_epsilon(noise_multiplier=1.0, steps=1, delta=1e-5, accountant="moments")


@pytest.mark.parametrize("target", [1.0, 2.0, 4.0, 8.0], ids=lambda e: f"eps={e}")
def test_noise_multiplier_for_epsilon(target):
    s = gaussian_noise_multiplier(target, steps=20, delta=1e-5)
    assert gaussian_epsilon(noise_multiplier=s, steps=20, delta=1e-5) <= target
    assert gaussian_epsilon(noise_multiplier=s * 0.98, steps=20, delta=1e-5) > target


@pytest.mark.parametrize("scope", ["local", "trusted-sum"])
def test_gaussian_noise_scopes(scope):
    k, sigma, clip, n = 8, 1.5, 2.0, 20000
    mech = GaussianNoise(k, clip, sigma, scope=scope)
    total = torch.zeros(n, dtype=torch.float64)
    one = None
    for i in range(k):
        noisy = mech.add(torch.zeros(n), RandomBits(bytes([i]) * 32))
        one = noisy if one is None else one
        total += noisy
    per_peer = sigma * clip * (1.0 if scope == "local" else 1 / math.sqrt(k))
    assert one.std().item() == pytest.approx(per_peer, rel=0.03)
    assert total.std().item() == pytest.approx(per_peer * math.sqrt(k), rel=0.03)
    eps = mech.epsilon(1e-5, 10)
    report = mech.report(1e-5, 10)
    if scope == "trusted-sum":  # one message carries 1/sqrt(K) of the noise: far weaker
        assert report["epsilon_of_one_message"] > 3 * eps
        assert mech.epsilon(1e-5, 10, withheld=1) > eps
    else:
        assert mech.epsilon(1e-5, 10, withheld=3) == eps
