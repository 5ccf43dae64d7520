"""Distributed differential privacy baseline: clipped updates, Gaussian noise shared by peers,
and a Rényi-DP accountant.

Unit of privacy: one peer's whole update in a round (peer-level DP). Each peer clips its update to
L2 norm c and adds Gaussian noise of variance ``σ²c²/K``; the sum of the K shares has variance
``σ²c²``, so the aggregate is the Gaussian mechanism with noise multiplier σ on a sum whose
sensitivity to adding/removing one peer is c. The guarantee assumes honest peers add their
shares (a coalition that withholds its noise weakens it: that is the usual distributed-DP caveat;
with encryption, no one sees an individual noisy update).

Accounting: the RDP of the Gaussian mechanism is ``α / (2σ²)`` at order α, and RDP composes
additively over rounds. With a per-round sampling rate q < 1 (each peer participates with
probability q) we use the sampled-Gaussian RDP of Mironov, Talwar and Zhang (2019), computed
numerically for *integer* orders only (a valid upper bound: the minimum over fewer orders). The
conversion to (ε, δ) is the one of Balle et al. (2020), as in Opacus and TF-Privacy:
``ε = RDP(α) + log((α-1)/α) - (log δ + log α)/(α-1)``, minimised over the orders.

The noise is drawn from ``torch``'s generator (a Mersenne Twister/Philox, not a CSPRNG) seeded from
the run's seed: good for experiments, not for deployment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "DEFAULT_ORDERS",
    "add_noise_share",
    "epsilon",
    "noise_tail_bound",
    "rdp_gaussian",
    "rdp_sampled_gaussian",
    "sigma_for_epsilon",
]

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1.25, 1.5, 1.75]
    + [2 + x / 4 for x in range(0, 33)]
    + list(range(11, 64))
    + [64, 80, 96]
    + [128, 160, 192, 256]
)


def add_noise_share(
    update: torch.Tensor, *, sigma: float, clip: float, peers: int, generator: torch.Generator
) -> torch.Tensor:
    """This peer's share of the noise: ``update + N(0, σ²c²/K)`` per coordinate (float64)."""
    std = sigma * clip / math.sqrt(peers)
    noise = torch.randn(update.shape, generator=generator, dtype=torch.float64)
    return update.double() + std * noise.to(update.device)


def noise_tail_bound(sigma: float, clip: float, z: float = 12.0) -> float:
    """A bound on one coordinate of the summed noise (``z`` standard deviations of σ·c):
    exceeded with probability < 4e-33 per coordinate for z = 12, used in the no-wrap check."""
    return z * sigma * clip


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def rdp_gaussian(sigma: float, alpha: float) -> float:
    """RDP of one Gaussian mechanism (sensitivity 1, noise multiplier σ) at order α."""
    return alpha / (2.0 * sigma * sigma)


def rdp_sampled_gaussian(q: float, sigma: float, alpha: int) -> float:
    """RDP at integer order α of the Poisson-sampled Gaussian mechanism (Mironov et al. 2019,
    Sec. 3.3): ``log A_α / (α-1)`` with
    ``A_α = Σ_i binom(α, i) (1-q)^(α-i) q^i exp((i²-i)/(2σ²))``."""
    if q == 0:
        return 0.0
    if q == 1.0:
        return rdp_gaussian(sigma, alpha)
    if alpha != int(alpha) or alpha < 2:
        raise ValueError("the sampled Gaussian RDP is computed for integer orders >= 2 only")
    a = int(alpha)
    log_a = -math.inf
    for i in range(a + 1):
        log_coef = math.lgamma(a + 1) - math.lgamma(i + 1) - math.lgamma(a - i + 1)
        term = log_coef + i * math.log(q) + (a - i) * math.log1p(-q) + (i * i - i) / (2 * sigma**2)
        log_a = _log_add(log_a, term)
    return log_a / (a - 1)


def epsilon(
    *,
    sigma: float,
    rounds: int,
    delta: float,
    sample_rate: float = 1.0,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """ε at δ after ``rounds`` compositions of the (sampled) Gaussian with noise multiplier σ."""
    if sigma <= 0:
        return math.inf
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if rounds == 0:
        return 0.0
    best = math.inf
    for alpha in orders:
        if sample_rate < 1.0:
            if alpha != int(alpha) or alpha < 2:
                continue
            rdp = rounds * rdp_sampled_gaussian(sample_rate, sigma, int(alpha))
        else:
            rdp = rounds * rdp_gaussian(sigma, alpha)
        eps = rdp + math.log1p(-1.0 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        best = min(best, eps)
    return max(best, 0.0)


def sigma_for_epsilon(
    target_epsilon: float,
    *,
    rounds: int,
    delta: float,
    sample_rate: float = 1.0,
    tol: float = 1e-4,
) -> float:
    """Smallest noise multiplier σ (to ``tol`` relative) with ``epsilon(σ) <= target``."""
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")

    def eps(s: float) -> float:
        return epsilon(sigma=s, rounds=rounds, delta=delta, sample_rate=sample_rate)

    lo, hi = 1e-3, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"no sigma reaches epsilon={target_epsilon}")
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
