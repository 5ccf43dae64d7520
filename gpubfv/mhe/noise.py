"""Noise tracking for the multiparty path and the smudging width derived from it.

Noise is tracked as a variance (per coefficient, in units of the phase c0 + c1*s = Delta*m + e).
Errors are centered binomial (variance 10.5), secrets ternary (variance 2/3 per peer), so for K
peers with s = sum s_i and e_pk = sum e_i:

    fresh public-key encryption:
        Var = N*K*10.5*(2/3) [e_pk*u] + N*10.5*(2K/3) [e1*s] + 10.5 [e0] + 1/12 [rounding]
    modulus switch Q -> Q':        Var' = Var*(Q'/Q)^2 + (1 + N*2K/3)/12
    sum of M ciphertexts:          Var * M

Smudging (Mouchet et al., PETS'21, Sec. IV.E): each peer's decryption share carries noise of
standard deviation sigma_smudge = 2^(lambda/2) * sigma_ct, enough to hide the ciphertext's own
noise from a coalition of the other K-1 peers (who know their own smudging noise). The combined
phase then has variance Var_ct + K*sigma_smudge^2, and decryption is exact as long as
kappa*sigma_total < Q'/(2t) - 1, with kappa the Gaussian tail factor for a failure probability of
2^-fail_bits per coefficient. `required_log_q` turns that into the modulus a level must reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpubfv.params import ERROR_SIGMA, ParameterError, Parameters, ParametersLiteral

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
        return math.sqrt(self.variance)

    @classmethod
    def fresh(cls, params: Parameters, peers: int, level: int | None = None) -> NoiseEstimate:
        n, k = params.n, peers
        var = n * k * ERROR_VAR * TERNARY_VAR + n * ERROR_VAR * k * TERNARY_VAR + ERROR_VAR
        return cls(var + 1.0 / 12.0, len(params.q) if level is None else level)

    def mod_switch(self, params: Parameters, level: int, peers: int) -> NoiseEstimate:
        ratio = params.q_at(level) / params.q_at(self.level)
        rounding = (1.0 + params.n * peers * TERNARY_VAR) / 12.0
        return NoiseEstimate(self.variance * ratio * ratio + rounding, level)

    def summed(self, count: int) -> NoiseEstimate:
        return NoiseEstimate(self.variance * count, self.level)

    def __add__(self, other: NoiseEstimate) -> NoiseEstimate:
        if self.level != other.level:
            raise ValueError("noise estimates at different levels")
        return NoiseEstimate(self.variance + other.variance, self.level)


def tail_factor(n: int, fail_bits: int = 40) -> float:
    """kappa with P(|X| > kappa*sigma) <= 2^-fail_bits / N for a Gaussian X (union over N)."""
    return math.sqrt(2.0 * math.log(2.0) * (fail_bits + math.log2(n) + 1))


def smudging_sigma(noise: NoiseEstimate, lam: int = 40) -> float:
    return 2.0 ** (lam / 2.0) * noise.std


def required_log_q(
    params_n: int, t: int, noise: NoiseEstimate, peers: int, lam: int = 40, fail_bits: int = 40
) -> float:
    """log2 of the smallest Q' that decrypts the smudged sum exactly."""
    sigma_sm = smudging_sigma(noise, lam)
    total = math.sqrt(noise.variance + peers * sigma_sm**2)
    return math.log2(2.0 * t * (tail_factor(params_n, fail_bits) * total + 1.0))


def check_decryptable(
    params: Parameters, noise: NoiseEstimate, peers: int, lam: int = 40, fail_bits: int = 40
) -> float:
    """Return sigma_smudge, or raise NoiseBudgetError naming the modulus that would suffice."""
    need = required_log_q(params.n, params.t, noise, peers, lam, fail_bits)
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
            else "choose parameters with a larger Q (see gpubfv.mhe.choose_parameters)"
        )
        raise NoiseBudgetError(
            f"smudged sum of {peers} peers at lambda={lam} needs log2 Q >= {need:.1f}, "
            f"level {noise.level} has {have:.1f}: {hint}"
        )
    return smudging_sigma(noise, lam)


@dataclass(frozen=True)
class AggregationPlan:
    """Parameters and packing for K peers summing signed values of `value_bits` bits."""

    literal: ParametersLiteral
    peers: int
    value_bits: int
    pack: int  # values per coefficient
    width: int  # bits per packed sub-value (room for the K-fold sum)
    level: int  # ciphertext primes kept on the wire
    wire_log_q: float
    lam: int

    @property
    def bytes_per_value(self) -> float:
        """Ciphertext bytes per value at the wire level (2 ring elements, bit-packed)."""
        q_bits = sum(q.bit_length() for q in Parameters(self.literal).q[: self.level])
        return 2 * q_bits / 8 / self.pack

    def describe(self) -> str:
        return (
            f"K={self.peers} b={self.value_bits} lambda={self.lam}: N=2^{self.literal.log_n}, "
            f"pack={self.pack}x{self.width} bits, t of {self.literal.t_bits} bits, "
            f"wire level {self.level} (log2 Q'={self.wire_log_q:.1f}), "
            f"{self.bytes_per_value:.2f} B/value"
        )


def choose_parameters(
    peers: int,
    value_bits: int,
    lam: int = 40,
    fail_bits: int = 40,
    log_n_choices: tuple[int, ...] = (12, 13, 14, 15),
    max_pack: int = 3,
) -> AggregationPlan:
    """Pick (N, Q, t, packing) minimizing ciphertext bytes per value for a K-peer sum.

    Values are offset to be non-negative (v + 2^(b-1)), so a sub-slot needs b + ceil(log2 K)
    bits. The wire modulus Q' is a prefix of Q whose last prime is sized to just fit the
    derived bound; the encryption modulus adds one 30-bit prime that is switched away before
    sending (so the wire noise is the rounding noise of the switch, not the fresh noise).
    """
    from gpubfv.params import HE_STANDARD_128

    if peers < 1 or value_bits < 1:
        raise ValueError("peers and value_bits must be positive")
    width = value_bits + max(1, math.ceil(math.log2(peers)))
    best: AggregationPlan | None = None
    for log_n in log_n_choices:
        n = 1 << log_n
        for pack in range(1, max_pack + 1):
            t_bits = pack * width + 1
            if t_bits > 61:
                continue
            t_est = 2**t_bits
            # wire noise: switched from a larger Q, so rounding noise dominates; sum of K
            dummy_var = (1.0 + n * peers * TERNARY_VAR) / 12.0 + ERROR_VAR
            noise = NoiseEstimate(dummy_var * peers, 1)
            need = required_log_q(n, t_est, noise, peers, lam, fail_bits)
            full, rest = divmod(math.ceil(need) + 1, 30)
            lit = None
            while lit is None and rest <= 30:
                q_bits = [30] * full + ([max(rest, (2 * n).bit_length() + 1)] if rest else [])
                enc_bits = q_bits + [30]
                if sum(enc_bits) + 30 > HE_STANDARD_128[n]:
                    break
                cand = ParametersLiteral(
                    log_n=log_n,
                    q_bits=tuple(enc_bits),
                    p_bits=(30,),
                    t_bits=t_bits,
                    batching=False,
                    name=f"agg-K{peers}-b{value_bits}-p{pack}",
                )
                try:
                    Parameters(cand)
                    lit = cand
                except ParameterError:
                    rest += 1  # no NTT-friendly prime of that size: take one bit more
            if lit is None:
                continue
            wire_level = len(q_bits)
            plan = AggregationPlan(lit, peers, value_bits, pack, width, wire_level, need, lam)
            if best is None or plan.bytes_per_value < best.bytes_per_value - 1e-9:
                best = plan  # ties keep the smaller ring (cheaper per ciphertext)
    if best is None:
        raise NoiseBudgetError("no secure parameter set fits; reduce peers, bits or lambda")
    return best
