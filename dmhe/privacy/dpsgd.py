"""Record-level DP-SGD at each peer through Opacus (the baseline of the DP literature).

Each peer trains its local steps with an Opacus ``PrivacyEngine`` of its own
(``make_private``: per-sample gradients clipped to ``max_grad_norm``, Gaussian noise of
``noise_multiplier``, Poisson sampling at rate ``1/ceil(n/B)`` of its n records), and the
updates are then averaged like any other. The unit of privacy is one training record of one
peer; the peer's engine accounts its steps over every round. The Gaussian noise is not
Opacus' (torch's generator; its ``secure_mode`` needs torchcsprng, not installed here) but a
float Gaussian from our ChaCha20 (:mod:`dmhe.privacy.csprng_opacus`: Box-Muller on 53-bit
CSPRNG uniforms, with the floating-point caveat of Mironov 2012); Poisson sampling of the
batches still uses torch's generator, seeded from the run seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dmhe.privacy.accounting import gaussian_epsilon
from dmhe.privacy.random import RandomBits, derive_seed

__all__ = ["DPSGD", "private_local_update"]


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings shared by the peers; ``sample_rate`` is the largest peer's rate."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_round: int
    accountant: str = "rdp"
    name: str = "DP-SGD (Opacus)"

    def epsilon(self, delta: float, rounds: int, withheld: int = 0) -> float:
        """Record-level eps at ``delta`` after ``rounds`` rounds of local steps."""
        return gaussian_epsilon(
            noise_multiplier=self.noise_multiplier,
            steps=rounds * self.steps_per_round,
            delta=delta,
            sample_rate=self.sample_rate,
            accountant=self.accountant,
        )

    def report(self, delta: float, rounds: int, threshold: int | None = None) -> dict[str, Any]:
        """Plain data for run.json and the log."""
        return {
            "mechanism": "DP-SGD at each peer (Opacus)",
            "unit": "one training record of one peer",
            "delta": delta,
            "rounds": rounds,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": rounds * self.steps_per_round,
            "accountant": self.accountant,
            "epsilon": self.epsilon(delta, rounds),
            "noise": "float Gaussian (Box-Muller) from ChaCha20 uniforms",
            "sampling": "Poisson, torch generator from the run seed",
        }


def sample_rate_for(records: int, batch_size: int) -> float:
    """Opacus' Poisson rate for a loader of ``records`` in batches of ``batch_size``."""
    return 1.0 / math.ceil(records / batch_size)


def private_local_update(
    engines: dict[int, Any],
    peer: int,
    model: nn.Module,
    data: Dataset[Any],
    *,
    settings: DPSGD,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    noise_seed: bytes | None = None,
) -> nn.Module:
    """``settings.steps_per_round`` DP-SGD steps on ``model`` (a fresh copy: Opacus hooks it)
    with peer ``peer``'s engine in ``engines`` (a :class:`CSPRNGPrivacyEngine`, created on first
    use, kept for its accountant); returns the trained module. The noise comes from a
    :class:`RandomBits` keyed by ``os.urandom``, or by ``noise_seed`` (tests: reproducible, not
    private); ``generator`` drives only the loader and Opacus' Poisson sampling."""
    from dmhe.privacy.csprng_opacus import CSPRNGPrivacyEngine

    seed = None if noise_seed is None else derive_seed(b"dp-sgd", noise_seed)
    if peer not in engines:
        engines[peer] = CSPRNGPrivacyEngine(accountant=settings.accountant)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(data, batch_size=batch_size, generator=generator)
    with warnings.catch_warnings():  # Opacus warns about secure_mode and its hooks each call
        warnings.simplefilter("ignore")
        private, opt, loader = engines[peer].make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=settings.noise_multiplier,
            max_grad_norm=settings.max_grad_norm,
            noise_bits=RandomBits(seed, device=device),
        )
        loss_fn = nn.CrossEntropyLoss()
        done = 0
        while done < settings.steps_per_round:
            for x, y in loader:
                if done == settings.steps_per_round:
                    break
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                loss_fn(private(x), y).backward()
                opt.step()
                done += 1
    return private._module
