"""DP-SGD's Gaussian noise comes from ChaCha20 (RandomBits), not from torch's generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dmhe.privacy.random import RandomBits
from tests.smallcfg import small_config

pytest.importorskip("opacus")


def _noise(bits: RandomBits, nm: float = 1.3, mgn: float = 0.7) -> torch.Tensor:
    """The noise the CSPRNG optimizer adds to zero summed gradients of a 20,200-value model."""
    from dmhe.privacy.csprng_opacus import CSPRNGDPOptimizer

    model = nn.Sequential(nn.Linear(200, 100), nn.Linear(100, 1, bias=False))
    opt = CSPRNGDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_bits=bits,
        noise_multiplier=nm,
        max_grad_norm=mgn,
        expected_batch_size=8,
    )
    for p in model.parameters():
        p.summed_grad = torch.zeros_like(p)
    opt.add_noise()
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_normal_moments_and_tail():
    z = RandomBits(b"n" * 32).normal(100_001)
    assert z.shape == (100_001,) and z.dtype == torch.float64
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1.0) < 0.02
    assert abs(float((z**4).mean()) - 3.0) < 0.15  # kurtosis of a Gaussian
    assert abs(float((z.abs() <= 1).double().mean()) - math.erf(1 / math.sqrt(2))) < 0.007
    assert float(z.abs().max()) <= math.sqrt(106 * math.log(2)) + 1e-9


def test_optimizer_noise_has_the_configured_std():
    nm, mgn = 1.3, 0.7
    z = _noise(RandomBits(b"o" * 32), nm, mgn).double()
    n, std = z.numel(), nm * mgn
    assert n == 20_200
    assert abs(float(z.mean())) < 5 * std / math.sqrt(n)
    assert abs(float(z.std()) / std - 1.0) < 0.03


def test_torch_seed_does_not_change_the_noise():
    torch.manual_seed(0)
    a = _noise(RandomBits(None))
    torch.manual_seed(0)
    b = _noise(RandomBits(None))
    assert not torch.equal(a, b)  # keyed from os.urandom: the torch seed fixes nothing
    torch.manual_seed(0)
    c = _noise(RandomBits(b"s" * 32))
    torch.manual_seed(1)
    d = _noise(RandomBits(b"s" * 32))
    assert torch.equal(c, d)  # a seeded stream: the torch seed changes nothing


def test_engine_refuses_without_bits_or_with_a_torch_generator():
    from dmhe.privacy.csprng_opacus import CSPRNGPrivacyEngine

    model = nn.Linear(4, 2)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.zeros(16, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    common = dict(noise_multiplier=1.0, max_grad_norm=1.0, data_loader=loader)
    with pytest.raises(ValueError, match="noise_bits"):
        CSPRNGPrivacyEngine().make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **common
        )
    with pytest.raises(ValueError, match="noise_generator"):
        other = nn.Linear(4, 2)
        CSPRNGPrivacyEngine().make_private(
            module=other,
            optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
            noise_generator=torch.Generator(),
            noise_bits=RandomBits(None),
            **common,
        )


def _dp_sgd_params(reproducible: bool) -> tuple[torch.Tensor, object]:
    from dmhe.trainer import Trainer

    torch.manual_seed(0)
    tr = Trainer(
        small_config(
            mode="dp-sgd",
            peers=2,
            rounds=1,
            local_steps=1,
            dp_sigma=1.0,
            dp_reproducible=reproducible,
        )
    )
    metrics = tr.train()
    assert math.isfinite(metrics[-1]["dp_epsilon"])
    return torch.cat([p.detach().flatten() for p in tr.model.parameters()]), tr


def test_dp_sgd_training_runs_with_csprng_noise():
    from dmhe.privacy.csprng_opacus import CSPRNGPrivacyEngine

    a, tr = _dp_sgd_params(reproducible=False)
    engines = tr._dp_engines  # type: ignore[attr-defined]
    assert engines and all(isinstance(e, CSPRNGPrivacyEngine) for e in engines.values())
    assert all(len(e.accountant.history) >= 1 for e in engines.values())  # its step hook ran
    b, _ = _dp_sgd_params(reproducible=False)
    assert torch.isfinite(a).all() and not torch.equal(a, b)  # same torch seed, fresh noise
    c, _ = _dp_sgd_params(reproducible=True)
    d, _ = _dp_sgd_params(reproducible=True)
    assert torch.equal(c, d)  # --dp-reproducible: the run seed keys RandomBits
