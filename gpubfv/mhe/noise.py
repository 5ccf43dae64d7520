"""Noise tracking for the multiparty path and the smudging width derived from it.

Noise is tracked as a variance (per coefficient, in units of the phase c0 + c1*s = Delta*m + e).
Errors are centered binomial (variance 10.5), secrets ternary (variance 2/3 per peer), so for K
peers with s = sum s_i and e_pk = sum e_i:

    fresh public-key encryption:
        Var = N*K*10.5*(2/3) [e_pk*u] + N*10.5*(2K/3) [e1*s] + 10.5 [e0] + 1/12 [rounding]
    modulus switch Q -> Q':        Var' = Var*(Q'/Q)^2 + (1 + N*2K/3)/12
    sum of M ciphertexts:          Var * M

Smudging: each peer's decryption share carries noise whose width a `Smudging` spec derives from
sigma_ct, N and the declared decryption budget (gpubfv/mhe/smudging.py states the notion, the
argument and the derivation). Decryption of the smudged sum is exact as long as
tau < Q'/(2t) - 1, tau the bound on |e_ct + sum of K smudging noises| at 2^-fail_bits over the
budget (`Smudging.sum_bound`); `required_log_q` turns that into the modulus a level must reach.
The planner (`choose_parameters`, `AggregationPlan`) lives in gpubfv/mhe/planner.py and is
re-exported here until callers import it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpubfv.mhe.smudging import Smudging
from gpubfv.params import ERROR_SIGMA, Parameters

TERNARY_VAR = 2.0 / 3.0
ERROR_VAR = ERROR_SIGMA**2


class NoiseBudgetError(ValueError):
    """The parameters cannot hold the (smudged) result exactly."""


@dataclass(frozen=True)
class NoiseEstimate:
    """Per-coefficient noise variance of a ciphertext at `level` (phase units)."""

    variance: float
    level: int

    @property
    def std(self) -> float:
        """Standard deviation sigma_ct of the per-coefficient noise."""
        return math.sqrt(self.variance)

    @classmethod
    def fresh(cls, params: Parameters, peers: int, level: int | None = None) -> NoiseEstimate:
        """A fresh public-key encryption under the collective key of `peers` peers."""
        n, k = params.n, peers
        var = n * k * ERROR_VAR * TERNARY_VAR + n * ERROR_VAR * k * TERNARY_VAR + ERROR_VAR
        return cls(var + 1.0 / 12.0, len(params.q) if level is None else level)

    def mod_switch(self, params: Parameters, level: int, peers: int) -> NoiseEstimate:
        """The estimate after switching this ciphertext down to `level`."""
        ratio = params.q_at(level) / params.q_at(self.level)
        rounding = (1.0 + params.n * peers * TERNARY_VAR) / 12.0
        return NoiseEstimate(self.variance * ratio * ratio + rounding, level)

    def summed(self, count: int) -> NoiseEstimate:
        """The estimate of a sum of `count` independent such ciphertexts."""
        return NoiseEstimate(self.variance * count, self.level)

    def __add__(self, other: NoiseEstimate) -> NoiseEstimate:
        if self.level != other.level:
            raise ValueError("noise estimates at different levels")
        return NoiseEstimate(self.variance + other.variance, self.level)


def tail_factor(n: int, fail_bits: int = 40) -> float:
    """kappa with P(|X| > kappa*sigma) <= 2^-fail_bits / N for a Gaussian X (union over N)."""
    return math.sqrt(2.0 * math.log(2.0) * (fail_bits + math.log2(n) + 1))


def _spec(smudging: Any) -> Smudging:
    if not isinstance(smudging, Smudging):
        raise TypeError(
            f"smudging must be a gpubfv.mhe.smudging.Smudging (notion, lam, budget), got "
            f"{smudging!r}; a bare lambda no longer selects a notion"
        )
    return smudging


def smudging_sigma(noise: NoiseEstimate, n: int, smudging: Smudging) -> float:
    """Width of each peer's smudging noise for a ciphertext with this noise, ring degree n."""
    return _spec(smudging).sigma(noise.std, n)


def required_log_q(
    params_n: int, t: int, noise: NoiseEstimate, peers: int, smudging: Smudging
) -> float:
    """log2 of the smallest Q' that decrypts the smudged sum of `peers` shares exactly."""
    spec = _spec(smudging)
    sigma = spec.sigma(noise.std, params_n)
    tau = spec.sum_bound(sigma, noise.std, peers, params_n)
    return math.log2(2.0 * t * (tau + 1.0))


def check_decryptable(
    params: Parameters, noise: NoiseEstimate, peers: int, smudging: Smudging
) -> float:
    """Return the smudging sigma, or raise NoiseBudgetError naming the level that would do."""
    spec = _spec(smudging)
    need = required_log_q(params.n, params.t, noise, peers, spec)
    have = math.log2(params.q_at(noise.level))
    if have < need:
        better = next(
            (
                lv
                for lv in range(noise.level, len(params.q) + 1)
                if math.log2(params.q_at(lv)) >= need
            ),
            None,
        )
        hint = (
            f"keep the ciphertext at level {better} (log2 Q={math.log2(params.q_at(better)):.1f})"
            if better
            else "choose parameters with a larger Q (see gpubfv.mhe.planner.choose_parameters)"
        )
        raise NoiseBudgetError(
            f"smudged sum of {peers} peers ({spec.notion}, lambda={spec.lam}, "
            f"D={spec.budget}) needs log2 Q >= {need:.1f}, level {noise.level} has "
            f"{have:.1f}: {hint}"
        )
    return spec.sigma(noise.std, params.n)


def __getattr__(name: str) -> Any:
    # Lazy re-export: planner imports this module, so an eager import would be circular.
    if name in ("choose_parameters", "AggregationPlan"):
        from gpubfv.mhe import planner

        return getattr(planner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
