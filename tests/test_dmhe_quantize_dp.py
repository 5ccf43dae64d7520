"""Quantization, the no-wrap check, and the RDP accountant."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmhe import dp
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


def test_gaussian_one_round_known_value():
    # sigma=1, one round, delta=1e-5. Classic conversion: min_a a/2 + log(1/delta)/(a-1),
    # optimum a = 1 + sqrt(2 log 1e5) ~ 5.80, value 5.30; the Balle et al. conversion
    # subtracts (log a)/(a-1) - log((a-1)/a), giving ~4.7.
    eps = dp.epsilon(sigma=1.0, rounds=1, delta=1e-5)
    a = 1 + math.sqrt(2 * math.log(1e5))
    classic = a / 2 + math.log(1e5) / (a - 1)
    assert classic == pytest.approx(5.30, abs=0.01)
    assert 4.0 < eps < classic
    assert eps == pytest.approx(4.73, abs=0.05)


def test_sampled_gaussian_matches_the_tf_privacy_mnist_example():
    # sigma=1.1, q=256/60000, 60 epochs, delta=1e-5: TF-Privacy reports eps ~ 3.0 with the
    # classic conversion over integer orders.
    q, steps = 256 / 60000, 60 * 60000 // 256
    classic = min(
        steps * dp.rdp_sampled_gaussian(q, 1.1, a) + math.log(1e5) / (a - 1) for a in range(2, 257)
    )
    assert classic == pytest.approx(3.0, abs=0.1)
    assert dp.epsilon(sigma=1.1, rounds=steps, delta=1e-5, sample_rate=q) < classic


def test_sampled_gaussian_reduces_to_gaussian_and_is_smaller():
    for a in (2, 5, 32):
        assert dp.rdp_sampled_gaussian(1.0, 2.0, a) == dp.rdp_gaussian(2.0, a)
        assert dp.rdp_sampled_gaussian(0.1, 2.0, a) < dp.rdp_gaussian(2.0, a)


def test_epsilon_monotonic():
    e = [dp.epsilon(sigma=s, rounds=10, delta=1e-5) for s in (0.5, 1, 2, 4, 8)]
    assert all(x > y for x, y in zip(e, e[1:], strict=False))
    r = [dp.epsilon(sigma=2.0, rounds=t, delta=1e-5) for t in (1, 10, 100)]
    assert all(x < y for x, y in zip(r, r[1:], strict=False))
    d = [dp.epsilon(sigma=2.0, rounds=10, delta=x) for x in (1e-3, 1e-5, 1e-7)]
    assert all(x < y for x, y in zip(d, d[1:], strict=False))


@pytest.mark.parametrize("target", [1.0, 2.0, 4.0, 8.0], ids=lambda e: f"eps={e}")
def test_sigma_for_epsilon(target):
    s = dp.sigma_for_epsilon(target, rounds=20, delta=1e-5)
    assert dp.epsilon(sigma=s, rounds=20, delta=1e-5) <= target
    assert dp.epsilon(sigma=s * 0.99, rounds=20, delta=1e-5) > target


def test_noise_shares_sum_to_sigma_c():
    k, sigma, clip, n = 8, 1.5, 2.0, 20000
    total = torch.zeros(n, dtype=torch.float64)
    for i in range(k):
        g = torch.Generator().manual_seed(i)
        total += dp.add_noise_share(torch.zeros(n), sigma=sigma, clip=clip, peers=k, generator=g)
    assert total.std().item() == pytest.approx(sigma * clip, rel=0.03)
