"""The aggregation planner: (N, Q, t, packing) for K peers summing b-bit values, smudged.

The plan is derived from the decryption inequality of gpubfv/mhe/noise.py under a `Smudging`
spec (notion, lambda, decryption budget D): the wire modulus Q' is the smallest prefix of Q that
holds the smudged K-fold sum, every candidate must fit the HE-standard 128-bit table, and the
winner minimizes ciphertext bytes per value. The plan holds the validated `Parameters` it was
checked with (primes generated once); `plan.literal` is its literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from gpubfv.mhe.noise import (
    ERROR_VAR,
    TERNARY_VAR,
    NoiseBudgetError,
    NoiseEstimate,
    check_decryptable,
    required_log_q,
)
from gpubfv.mhe.smudging import Smudging
from gpubfv.params import (
    HE_STANDARD_128,
    MAX_MODULUS_BITS,
    MAX_PLAIN_BITS,
    ParameterError,
    Parameters,
    ParametersLiteral,
)

LOG_N_CHOICES = (12, 13, 14, 15)


@dataclass(frozen=True, eq=False)
class AggregationPlan:
    """Validated parameters and packing for K peers summing signed values of `value_bits` bits."""

    params: Parameters
    peers: int
    value_bits: int
    pack: int  # values per coefficient
    width: int  # bits per packed sub-value (room for the K-fold sum)
    level: int  # ciphertext primes kept on the wire
    wire_log_q: float  # log2 of the Q' the inequality requires (the level's Q' is >= this)
    smudging: Smudging

    @property
    def literal(self) -> ParametersLiteral:
        """The plain literal of `params` (for run files and digests)."""
        return self.params.literal

    @property
    def lam(self) -> int:
        """The smudging lambda."""
        return self.smudging.lam

    @cached_property
    def wire_noise(self) -> NoiseEstimate:
        """Noise of the K-fold sum at the wire level (fresh, switched to Q', summed)."""
        p, k = self.params, self.peers
        return NoiseEstimate.fresh(p, k).mod_switch(p, self.level, k).summed(k)

    @cached_property
    def sigma(self) -> float:
        """Each peer's smudging width at the wire level (re-checked against the modulus)."""
        return check_decryptable(self.params, self.wire_noise, self.peers, self.smudging)

    @property
    def log2_distance(self) -> float:
        """The smudging notion's achieved total bound (log2), over the declared budget."""
        return self.smudging.log2_distance(self.sigma, self.wire_noise.std, self.params.n)

    @cached_property
    def bytes_per_value(self) -> float:
        """Ciphertext bytes per value at the wire level (2 ring elements, bit-packed)."""
        q_bits = sum(q.bit_length() for q in self.params.q[: self.level])
        return 2 * q_bits / 8 / self.pack

    def rows_for(self, values: int) -> int:
        """Ciphertext rows (= decryptions) that carry `values` values."""
        return -(-int(values) // (self.params.n * self.pack))

    def describe(self) -> str:
        """One line: the plan's ring, packing, wire level and size."""
        lit = self.literal
        q_bits = sum(q.bit_length() for q in self.params.q[: self.level])
        return (
            f"K={self.peers} b={self.value_bits}: N=2^{lit.log_n}, "
            f"pack={self.pack}x{self.width} bits, t of {self.params.t.bit_length()} bits, "
            f"wire level {self.level} (log2 Q'={q_bits} bits, needs {self.wire_log_q:.1f}), "
            f"{self.bytes_per_value:.2f} B/value"
        )


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _wire_variance(n: int, peers: int) -> float:
    # switched down from a larger Q: the rounding noise of the switch dominates; K-fold sum
    return ((1.0 + n * peers * TERNARY_VAR) / 12.0 + ERROR_VAR) * peers


def _candidate(
    log_n: int, peers: int, value_bits: int, pack: int, width: int, smudging: Smudging
) -> AggregationPlan | None:
    """The cheapest wire level for this ring and packing, or None past the 128-bit bound."""
    n = 1 << log_n
    t_bits = pack * width + 1
    noise = NoiseEstimate(_wire_variance(n, peers), 1)
    need = required_log_q(n, 2**t_bits, noise, peers, smudging)
    bits = math.ceil(need) + 1
    while True:
        count = -(-bits // MAX_MODULUS_BITS)  # spread Q' evenly over as few primes as fit
        q_bits = [bits // count + (i < bits % count) for i in range(count)]
        # one more prime is switched away before sending; P for key switching
        enc_bits = q_bits + [MAX_MODULUS_BITS]
        if sum(enc_bits) + MAX_MODULUS_BITS > HE_STANDARD_128[n]:
            return None
        lit = ParametersLiteral(
            log_n=log_n,
            q_bits=tuple(enc_bits),
            p_bits=(MAX_MODULUS_BITS,),
            t_bits=t_bits,
            batching=False,
            name=f"agg-K{peers}-b{value_bits}-p{pack}",
        )
        try:
            params = Parameters(lit)
        except ParameterError:
            bits += 1  # no NTT-friendly primes of these sizes: take one bit more
            continue
        plan = AggregationPlan(params, peers, value_bits, pack, width, len(q_bits), need, smudging)
        try:
            # the real noise of these primes must pass the same check CKS makes
            check_decryptable(params, plan.wire_noise, peers, smudging)
        except NoiseBudgetError:
            bits += 1
            continue
        return plan


def choose_parameters(
    peers: int,
    value_bits: int,
    *,
    smudging: Smudging,
    log_n_choices: tuple[int, ...] = LOG_N_CHOICES,
    max_pack: int = 3,
) -> AggregationPlan:
    """Pick (N, Q, t, packing) minimizing ciphertext bytes per value for a K-peer sum.

    Values are offset to be non-negative (v + 2^(b-1)), so a sub-slot needs b + ceil(log2 K)
    bits. The wire modulus Q' is a prefix of Q whose last prime is sized to just fit the
    derived bound; the encryption modulus adds one 30-bit prime that is switched away before
    sending. Raises NoiseBudgetError when no 128-bit set fits, naming what to reduce.
    """
    _check_count("peers", peers)
    _check_count("value_bits", value_bits)
    _check_count("max_pack", max_pack)
    if not isinstance(smudging, Smudging):
        raise TypeError(f"smudging must be a Smudging spec, got {smudging!r}")
    width = value_bits + max(1, math.ceil(math.log2(peers)))
    if width + 1 > MAX_PLAIN_BITS:
        raise NoiseBudgetError(
            f"value_bits + ceil(log2 K) = {width} leaves no room in a {MAX_PLAIN_BITS}-bit t: "
            f"reduce value_bits to at most {MAX_PLAIN_BITS - 1 - (width - value_bits)}"
        )
    best: AggregationPlan | None = None
    for log_n in log_n_choices:
        if (1 << log_n) not in HE_STANDARD_128:
            raise ValueError(f"log_n={log_n} has no 128-bit HE-standard entry")
        for pack in range(1, max_pack + 1):
            if pack * width + 1 > MAX_PLAIN_BITS:
                break
            plan = _candidate(log_n, peers, value_bits, pack, width, smudging)
            if plan is not None and (
                best is None or plan.bytes_per_value < best.bytes_per_value - 1e-9
            ):
                best = plan  # ties keep the smaller ring (cheaper per ciphertext)
    if best is None:
        s = smudging
        raise NoiseBudgetError(
            f"no 128-bit parameter set (N <= 2^{max(log_n_choices)}) holds the {s.notion} "
            f"smudged sum of K={peers} peers, b={value_bits}, lambda={s.lam}, D={s.budget}: "
            "reduce the decryption budget D, lambda, value_bits or peers"
        )
    return best


def choose_parameters_for_updates(
    peers: int,
    value_bits: int,
    *,
    values_per_round: int,
    rounds: int,
    notion: str = "statistical",
    lam: int = 40,
    fail_bits: int = 40,
) -> AggregationPlan:
    """A plan whose decryption budget D = rounds x its own ciphertext rows per round.

    D depends on the plan (N, packing) and the plan on D; start from the most rows any plan
    could need (N = 2^12, one value per coefficient) and shrink while the plan still covers it.
    """
    _check_count("values_per_round", values_per_round)
    _check_count("rounds", rounds)
    budget = rounds * -(-values_per_round // (1 << min(LOG_N_CHOICES)))
    plan = choose_parameters(peers, value_bits, smudging=Smudging(budget, notion, lam, fail_bits))
    for _ in range(8):
        need = rounds * plan.rows_for(values_per_round)
        if need >= plan.smudging.budget:
            break
        tighter = choose_parameters(
            peers, value_bits, smudging=Smudging(need, notion, lam, fail_bits)
        )
        if rounds * tighter.rows_for(values_per_round) > need:
            break
        plan = tighter
    return plan
