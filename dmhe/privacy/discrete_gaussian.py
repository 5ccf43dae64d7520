"""Exact discrete Gaussian noise N_Z(0, s) (Canonne, Kamath and Steinke, NeurIPS 2020).

:func:`discrete_gaussian` draws from the backend's sampler kernel (``kernels.cpu.dgauss``, its
CUDA twin on a GPU tensor's device) keyed by a fresh ChaCha20 stream of
:class:`~dmhe.privacy.random.RandomBits`: discrete Laplace proposals (scale t = isqrt(s) + 1),
accepted with Bernoulli(exp(-(|Y| t - s)^2 / (2 s t^2))) by the alternating-series algorithm on
exact rationals; uniform integers by rejection (no modulo bias) and no float in any decision.
The kernel's module docstring derives the integer ranges; they hold for ``s <= MAX_VARIANCE``
(``2 s t^2 < 2^56``). A candidate beyond the exact range (exponent >= 64) is rejected unless it
passes 64 Bernoulli(1/e) trials, in which case (probability < e^-64) the sampler raises instead
of approximating: :mod:`dmhe.privacy.ddg` subtracts that probability from delta.

The samples depend on the seed only (the lane layout is a function of the count), so a run is
reproducible on any machine and device.
"""

from __future__ import annotations

import torch

from dmhe.privacy.random import RandomBits
from gpubfv.backend import Backend

__all__ = ["MAX_VARIANCE", "discrete_gaussian", "discrete_gaussian_pmf"]

#: the largest integer variance the exact integer sampler accepts (about 2^27.5)
MAX_VARIANCE = Backend.discrete_gaussian_max_variance()


def discrete_gaussian(bits: RandomBits, variance: int, count: int) -> torch.Tensor:
    """``count`` exact samples of N_Z(0, variance) (CKS Algorithm 3), int64 on ``bits.device``.

    ``variance`` (the sigma^2 parameter; the discrete distribution's variance is slightly
    smaller) is an integer in ``[1, MAX_VARIANCE]``.
    """
    s = int(variance)
    if s != variance or not 1 <= s <= MAX_VARIANCE:
        raise ValueError(f"variance must be an integer in [1, {MAX_VARIANCE}], got {variance}")
    if int(count) < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    backend, key, nonce = bits.stream()
    return bits.as_tensor(backend.discrete_gaussian(key, nonce, s, int(count)))


def discrete_gaussian_pmf(variance: float, support: int) -> torch.Tensor:
    """The pmf of N_Z(0, variance) on ``[-support, support]`` (float64, normalised over it)."""
    x = torch.arange(-support, support + 1, dtype=torch.float64)
    w = torch.exp(-(x * x) / (2.0 * variance))
    return w / w.sum()
