"""Differential privacy for dmhe: mechanisms, exact integer samplers and accounting.

- :mod:`~dmhe.privacy.ddg`: the distributed discrete Gaussian in the integer domain (rotation,
  conditional rounding, exact noise from the CSPRNG), for ``encrypted-dp`` and its plaintext
  reference ``ddp-plaintext``;
- :mod:`~dmhe.privacy.gaussian`: continuous Gaussian baselines, ``dp`` (every message private)
  and ``dp-trusted-sum`` (1/K noise shares, private only as a sum);
- :mod:`~dmhe.privacy.dpsgd`: record-level DP-SGD at each peer through Opacus (``dp-sgd``);
- :mod:`~dmhe.privacy.accounting`: Opacus' RDP/PRV accountants, KLS's bound for the DDG sum.
"""

from __future__ import annotations

from dmhe.privacy.accounting import (
    ddg_cdp,
    ddg_epsilon,
    gaussian_epsilon,
    gaussian_noise_multiplier,
)
from dmhe.privacy.ddg import DistributedDiscreteGaussian
from dmhe.privacy.dpsgd import DPSGD, private_local_update
from dmhe.privacy.gaussian import GaussianNoise
from dmhe.privacy.random import RandomBits, derive_seed

__all__ = [
    "DPSGD",
    "DistributedDiscreteGaussian",
    "GaussianNoise",
    "Mechanism",
    "RandomBits",
    "ddg_cdp",
    "ddg_epsilon",
    "derive_seed",
    "gaussian_epsilon",
    "gaussian_noise_multiplier",
    "private_local_update",
]

Mechanism = DistributedDiscreteGaussian | GaussianNoise | DPSGD
