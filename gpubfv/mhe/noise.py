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

Compressed wire forms (gpubfv/mhe/compressed.py). c0 of every peer's ciphertext and every
peer's decryption share travel as y = round(x * 2^k / Q') mod 2^k and are summed in Z_2^k;
the owner of a chunk lifts the two sums back as round(Y * Q' / 2^k). Let u = Q' / 2^k.

    one compression:   |y*u - x| <= (1/2 + ROUND_SLACK) * u       (mod Q'; float64 fraction sum)
    M compressed summands, summed exactly mod 2^k:  error <= M * (1/2 + ROUND_SLACK) * u
    one lift:          |round(Y*u) - Y*u| <= 1/2

With K c0 roundings (one per peer's ciphertext: the reduce-scatter adds compressed c0 exactly,
so a chunk's c0 is rounded K times along any topology, never per hop) and K share roundings,
and two lifts (c0 sum, share sum), the phase c0 + sum h_i of the lifted parts differs from the
exact one by at most

    R(k) = (K + K) * (1/2 + ROUND_SLACK) * Q'/2^k + 1                      (`rounding_bound`)

a worst-case bound, not a tail: it adds to tau in the decryption condition without changing
the failure probability, which stays 2^-fail_bits:

    tau + R(k) < Q'/(2t) - 1                                 (`check_decryptable(rounding=)`)

`compression_bits` returns the smallest k for which this holds at the given level (the margin
M = Q'/(2t) - 1 - tau must exceed 1; then k = ceil(log2(2K (1/2 + ROUND_SLACK) Q' / (M - 1)))).
Security is unchanged: the compression of c0 is a public function of a public ciphertext, and
the compression of a share (and any sum of compressed shares) is a function of the smudged
share alone, so by data processing it reveals nothing the smudged share did not (the statistical
distance and the Renyi divergence of the smudging argument cannot grow under post-processing).
c1 is never rounded: its error would be multiplied by s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpubfv.mhe.rounding import MAX_COMPRESSED_BITS, ROUND_SLACK
from gpubfv.mhe.smudging import Smudging
from gpubfv.params import ERROR_SIGMA, Parameters
from gpubfv.ring.rns import float_rounding_slack

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


def rounding_bound(q_wire: int, bits: int, c0_roundings: int, share_roundings: int) -> float:
    """R(k): worst-case phase error of the compressed c0 and share sums after both lifts."""
    if bits < 1 or c0_roundings < 0 or share_roundings < 0:
        raise ValueError("rounding_bound needs bits >= 1 and non-negative rounding counts")
    count = c0_roundings + share_roundings
    return count * (0.5 + ROUND_SLACK) * math.ldexp(float(q_wire), -bits) + 1.0


def decryption_margin(
    params: Parameters, noise: NoiseEstimate, peers: int, smudging: Smudging
) -> float:
    """M = (Q'/(2t)) (1 - 2 EPS(L)) - 1 - tau at the noise's level: what rounding may still
    consume. EPS(L) is the relative error of the float part of decryption's scale-and-round
    (`gpubfv.ring.rns.float_rounding_slack`): below 1e-4 bits, but stated, not assumed away."""
    spec = _spec(smudging)
    sigma = spec.sigma(noise.std, params.n)
    tau = spec.sum_bound(sigma, noise.std, peers, params.n)
    usable = 1.0 - 2.0 * float_rounding_slack(noise.level)
    return float(params.q_at(noise.level)) / (2.0 * float(params.t)) * usable - 1.0 - tau


def compression_bits(
    params: Parameters,
    noise: NoiseEstimate,
    peers: int,
    smudging: Smudging,
    *,
    c0_roundings: int | None = None,
    share_roundings: int | None = None,
) -> int:
    """The smallest k with tau + R(k) < Q'/(2t) - 1 (K c0 and K share roundings by default).

    Raises NoiseBudgetError when the level has no margin left for any rounding.
    """
    n_c0 = peers if c0_roundings is None else c0_roundings
    n_sh = peers if share_roundings is None else share_roundings
    margin = decryption_margin(params, noise, peers, smudging)
    q_wire = params.q_at(noise.level)
    if margin <= 1.0:
        raise NoiseBudgetError(
            f"level {noise.level} leaves a decryption margin of {margin:.3g} < 1: no room for "
            "compressed c0 and shares (plan one more bit of Q')"
        )
    ratio = (n_c0 + n_sh) * (0.5 + ROUND_SLACK) * float(q_wire) / (margin - 1.0)
    bits = max(1, math.ceil(math.log2(ratio))) if ratio > 1 else 1
    while rounding_bound(q_wire, bits, n_c0, n_sh) >= margin:  # float log2: settle exactly
        bits += 1
    while bits > 1 and rounding_bound(q_wire, bits - 1, n_c0, n_sh) < margin:
        bits -= 1
    if bits > MAX_COMPRESSED_BITS:
        raise NoiseBudgetError(f"compression would need {bits} > {MAX_COMPRESSED_BITS} bits")
    return bits


def check_decryptable(
    params: Parameters,
    noise: NoiseEstimate,
    peers: int,
    smudging: Smudging,
    *,
    rounding: float = 0.0,
) -> float:
    """Return the smudging sigma, or raise NoiseBudgetError naming the level that would do.

    `rounding`: a worst-case phase error added to tau (R(k) of the compressed wire forms).
    """
    spec = _spec(smudging)
    if not (math.isfinite(rounding) and rounding >= 0):
        raise ValueError(f"rounding bound must be finite and >= 0, got {rounding!r}")
    if rounding and decryption_margin(params, noise, peers, spec) <= rounding:
        raise NoiseBudgetError(
            f"smudged sum of {peers} peers plus a rounding error of 2^"
            f"{math.log2(rounding):.1f} (compressed c0 and shares) exceeds Q'/(2t) - 1 at "
            f"level {noise.level}: send more bits (gpubfv.mhe.noise.compression_bits)"
        )
    need = required_log_q(params.n, params.t, noise, peers, spec)
    need -= math.log2(1.0 - 2.0 * float_rounding_slack(noise.level))  # see decryption_margin
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
