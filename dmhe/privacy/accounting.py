"""Privacy accounting: Opacus' accountants for the (subsampled) Gaussian, own code for the
distributed discrete Gaussian.

- Continuous Gaussian (the ``dp`` modes, each round one Gaussian mechanism of noise multiplier
  sigma; DP-SGD's Poisson-subsampled steps): :class:`opacus.accountants.RDPAccountant` (Mironov
  et al. 2019, Balle et al. 2020 conversion) or :class:`opacus.accountants.PRVAccountant`
  (Gopi et al. 2021), and Opacus' ``get_noise_multiplier`` for calibration.
- Distributed discrete Gaussian (Kairouz, Liu and Steinke, ICML 2021, Theorem 2): the sum of n
  independent N_Z(0, s)^d noise vectors added to an integer vector of L2 sensitivity D2 is
  ``eps^2/2``-concentrated DP with ``eps = min(sqrt(D2^2/(n s) + tau d / 2), D2/sqrt(n s) + tau
  sqrt(d))``, ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s k/(k+1))``. Concentrated DP is RDP
  ``alpha eps^2/2`` at every order, which composes additively over rounds; the conversion to
  (eps, delta) is Opacus' (``get_privacy_spent``). No library implements this bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

__all__ = [
    "ACCOUNTANTS",
    "ORDERS",
    "ddg_cdp",
    "ddg_epsilon",
    "ddg_tau",
    "gaussian_epsilon",
    "gaussian_noise_multiplier",
    "rdp_to_epsilon",
]

ACCOUNTANTS = ("rdp", "prv")

#: Opacus' default RDP orders, extended upward for the small-epsilon, many-round cases
ORDERS: tuple[float, ...] = (
    *[1 + x / 10.0 for x in range(1, 100)],
    *range(11, 64),
    *[64, 80, 96, 128, 160, 192, 256, 512, 1024],
)


def _accountant(name: str) -> object:
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "rdp":
        return RDPAccountant()
    if name == "prv":
        return PRVAccountant()
    raise ValueError(f"unknown accountant {name!r}; choose from {', '.join(ACCOUNTANTS)}")


def gaussian_epsilon(
    *,
    noise_multiplier: float,
    steps: int,
    delta: float,
    sample_rate: float = 1.0,
    accountant: str = "rdp",
) -> float:
    """eps at ``delta`` after ``steps`` (Poisson-subsampled at ``sample_rate``) Gaussian
    mechanisms of noise multiplier sigma, by Opacus' ``accountant`` (``rdp`` or ``prv``)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = _accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]  # type: ignore[attr-defined]
    with warnings.catch_warnings():  # PRV at q = 1 logs a harmless divide-by-zero
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(acc.get_epsilon(delta=delta))  # type: ignore[attr-defined]


def gaussian_noise_multiplier(
    target_epsilon: float,
    *,
    steps: int,
    delta: float,
    sample_rate: float = 1.0,
    accountant: str = "rdp",
) -> float:
    """The noise multiplier that reaches ``target_epsilon`` (Opacus' ``get_noise_multiplier``,
    which returns one whose eps is at most the target)."""
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")
    _accountant(accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=0.005,
            )
        )


def rdp_to_epsilon(rdp: Sequence[float], delta: float, orders: Sequence[float] = ORDERS) -> float:
    """(eps, delta) from an RDP curve over ``orders`` (Opacus' conversion, Balle et al. 2020)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _ = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(eps)


def ddg_tau(variance: float, components: int) -> float:
    """KLS's tau: how far the sum of ``components`` N_Z(0, variance) is from N_Z(0, n s)."""
    s = float(variance)
    return 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * s * k / (k + 1)) for k in range(1, int(components))
    )


def ddg_cdp(*, variance: float, components: int, l2: float, dim: int) -> float:
    """The eps of the ``eps^2/2``-concentrated DP of one noisy sum (KLS Theorem 2): ``components``
    independent N_Z(0, ``variance``)^``dim`` vectors, integer inputs of L2 sensitivity ``l2``."""
    if components < 1:
        return math.inf
    n_s = components * float(variance)
    tau = ddg_tau(variance, components)
    return min(
        math.sqrt(l2 * l2 / n_s + 0.5 * tau * dim),
        l2 / math.sqrt(n_s) + tau * math.sqrt(dim),
    )


def ddg_epsilon(
    *,
    variance: float,
    components: int,
    l2: float,
    dim: int,
    rounds: int,
    delta: float,
    orders: Sequence[float] = ORDERS,
) -> float:
    """eps at ``delta`` after ``rounds`` noisy sums (see :func:`ddg_cdp`), composed in RDP."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if rounds <= 0:
        return 0.0
    rho = 0.5 * ddg_cdp(variance=variance, components=components, l2=l2, dim=dim) ** 2
    if math.isinf(rho):
        return math.inf
    return rdp_to_epsilon([rounds * a * rho for a in orders], delta, orders)
