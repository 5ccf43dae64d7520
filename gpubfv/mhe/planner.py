"""The aggregation planner: (N, Q, t, packing, wire level) minimising a whole round's traffic.

One encrypted aggregation round (DESIGN §7) moves, per peer and over a ring of K peers, about
(K-1)/K of each of five passes of the padded update:

    ciphertext   reduce-scatter of (compressed c0, full c1)   rows * N * (k + log2 Q') bits
    c1           all-gather of the summed c1                   rows * N * log2 Q' bits
    share        reduce-scatter of the compressed shares        rows * N * k bits
    plaintext    all-gather of the opened sums                  rows * N * pack * width bits

rows = ceil(values / (N * pack)) (padding counts), log2 Q' the bit-packed width of the wire
primes, k the compressed width of c0 and shares (`gpubfv.mhe.noise.compression_bits`), plus the
frame headers of the (K-1) messages of each pass. The wire modulus Q' is a prefix of Q holding
the smudged K-fold sum plus the rounding of the compressed forms; a few bits more than the
inequality needs buy a smaller k, so the planner tries each. The search runs over
N in {2^12..2^15}, packing (pack * width + 1 <= the widest plaintext modulus this build offers,
`gpubfv.params.MAX_WIDE_PLAIN_BITS` where present, else MAX_PLAIN_BITS) and those extra bits:
first analytically (`estimate_round`: no primes), then the cheapest candidates are built as
validated `Parameters` and re-checked with their real primes. The plan holds the `Parameters`
it was checked with; `plan.literal` is its literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import gpubfv.params as _params
from gpubfv.mhe.noise import (
    ERROR_VAR,
    TERNARY_VAR,
    NoiseBudgetError,
    NoiseEstimate,
    check_decryptable,
    compression_bits,
    required_log_q,
    rounding_bound,
)
from gpubfv.mhe.rounding import MAX_COMPRESSED_BITS, ROUND_SLACK
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
EXTRA_WIRE_BITS = 6  # bits of Q' beyond the inequality tried for a smaller compressed width
VALIDATED = 4  # analytic winners rebuilt with real primes
SPLIT = ("ciphertext", "c1", "share", "plaintext")
# bytes every message adds to its payload (frame header + checksum + small fixed fields)
MESSAGE_OVERHEAD = {"ciphertext": 46, "c1": 8, "share": 100, "plaintext": 0}


#: widest sub-slot: its K-fold sum is decoded into an int64
SUM_BITS = 62


def max_plain_bits() -> int:
    """The widest plaintext modulus t (bits) this build of gpubfv.params accepts."""
    return int(getattr(_params, "MAX_WIDE_PLAIN_BITS", MAX_PLAIN_BITS))


def _split(
    n: int, pack: int, width: int, wire_bits: int, k_bits: int, peers: int, values: int | None
) -> dict[str, float]:
    """Bytes per value per peer of each pass of a ring round (see the module docstring)."""
    slots = n * pack
    rows = max(1, -(-values // slots)) if values else 1
    denom = values if values else slots  # the values the round carries (padding is paid)
    bits = {
        "ciphertext": k_bits + wire_bits,
        "c1": wire_bits,
        "share": k_bits,
        "plaintext": pack * width,
    }
    ring = (peers - 1) / peers  # a ring pass sends all chunks but one's own
    msgs = peers - 1
    return {
        name: (ring * rows * n * bits[name] / 8 + msgs * MESSAGE_OVERHEAD[name]) / denom
        for name in SPLIT
    }


@dataclass(frozen=True)
class RoundEstimate:
    """An analytic candidate: ring, packing, wire prime sizes and compressed width (no primes)."""

    log_n: int
    peers: int
    pack: int
    width: int
    wire_q_bits: tuple[int, ...]
    compressed_bits: int
    t_bits: int

    def split(self, values: int | None = None) -> dict[str, float]:
        """Bytes per value per peer of each pass (ciphertext, c1, share, plaintext)."""
        return _split(
            1 << self.log_n, self.pack, self.width, sum(self.wire_q_bits),
            self.compressed_bits, self.peers, values,
        )  # fmt: skip

    def round_bytes_per_value(self, values: int | None = None) -> float:
        """Whole-round bytes per value per peer (padding of `values` counted)."""
        return sum(self.split(values).values())


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
        """Each peer's smudging width at the wire level (re-checked with the rounding of the
        compressed c0 and shares)."""
        return check_decryptable(
            self.params, self.wire_noise, self.peers, self.smudging, rounding=self.rounding_bound
        )

    @cached_property
    def compressed_bits(self) -> int:
        """k: bits per coefficient of compressed c0 and shares (K roundings of each)."""
        return compression_bits(self.params, self.wire_noise, self.peers, self.smudging)

    @property
    def rounding_bound(self) -> float:
        """R(k): worst-case phase error of the compressed c0 and share sums after lifting."""
        q_wire = self.params.q_at(self.level)
        return rounding_bound(q_wire, self.compressed_bits, self.peers, self.peers)

    @property
    def log2_distance(self) -> float:
        """The smudging notion's achieved total bound (log2), over the declared budget."""
        return self.smudging.log2_distance(self.sigma, self.wire_noise.std, self.params.n)

    @property
    def wire_bits(self) -> int:
        """Bits of one coefficient of c1 on the wire (the packed widths of the wire primes)."""
        return sum(q.bit_length() for q in self.params.q[: self.level])

    @cached_property
    def bytes_per_value(self) -> float:
        """Fresh ciphertext bytes per value at the wire level (2 ring elements, bit-packed)."""
        return 2 * self.wire_bits / 8 / self.pack

    def rows_for(self, values: int) -> int:
        """Ciphertext rows (= decryptions) that carry `values` values."""
        return -(-int(values) // (self.params.n * self.pack))

    def round_split(self, values: int | None = None) -> dict[str, float]:
        """Bytes per value per peer of each pass of a ring round: ciphertext (compressed c0 +
        c1), c1 (all-gather), share (compressed), plaintext; padding of `values` counted
        (None: per value of whole rows)."""
        return _split(
            self.params.n, self.pack, self.width, self.wire_bits, self.compressed_bits,
            self.peers, values,
        )  # fmt: skip

    def round_bytes_per_value(self, values: int | None = None) -> float:
        """Whole-round bytes per value per peer (the sum of `round_split`)."""
        return sum(self.round_split(values).values())

    def describe(self) -> str:
        """One line: the plan's ring, packing, wire level and sizes."""
        lit = self.literal
        return (
            f"K={self.peers} b={self.value_bits}: N=2^{lit.log_n}, "
            f"pack={self.pack}x{self.width} bits, t of {self.params.t.bit_length()} bits, "
            f"wire level {self.level} (log2 Q'={self.wire_bits} bits, needs "
            f"{self.wire_log_q:.1f}), c0/shares at {self.compressed_bits} bits, "
            f"{self.bytes_per_value:.2f} B/value"
        )


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _wire_variance(n: int, peers: int) -> float:
    # switched down from a larger Q: the rounding noise of the switch dominates; K-fold sum
    return ((1.0 + n * peers * TERNARY_VAR) / 12.0 + ERROR_VAR) * peers


def _spread(bits: int) -> list[int]:
    """`bits` of Q' over as few primes of at most MAX_MODULUS_BITS bits as hold them, evenly."""
    count = -(-bits // MAX_MODULUS_BITS)
    return [bits // count + (i < bits % count) for i in range(count)]


def _analytic_k(
    n: int, t_bits: int, wire_bits: int, peers: int, smudging: Smudging, std: float
) -> int | None:
    """The compressed width for primes just below 2^b (the generator's choice), or None."""
    sigma = smudging.sigma(std, n)
    tau = smudging.sum_bound(sigma, std, peers, n)
    log_q = wire_bits - 0.01 * len(_spread(wire_bits))  # each prime a little below 2^b
    margin = 2.0 ** (log_q - t_bits - 1) - 1.0 - tau
    if margin <= 2.0:
        return None
    k = math.ceil(math.log2(2 * peers * (0.5 + ROUND_SLACK)) + log_q - math.log2(margin - 1.0))
    return max(1, k) if k <= MAX_COMPRESSED_BITS else None


def estimate_round(
    log_n: int, peers: int, width: int, pack: int, smudging: Smudging
) -> list[RoundEstimate]:
    """The analytic candidates of one ring and packing: the least Q' and a few bits more."""
    n = 1 << log_n
    t_bits = pack * width + 1
    std = math.sqrt(_wire_variance(n, peers))
    need = required_log_q(n, 2**t_bits, NoiseEstimate(std * std, 1), peers, smudging)
    out = []
    for extra in range(1, EXTRA_WIRE_BITS + 2):
        bits = math.ceil(need) + extra
        # Q' + one prime switched away before sending + P for key switching
        if bits + 2 * MAX_MODULUS_BITS > HE_STANDARD_128[n]:
            break
        k = _analytic_k(n, t_bits, bits, peers, smudging, std)
        if k is not None:
            out.append(RoundEstimate(log_n, peers, pack, width, tuple(_spread(bits)), k, t_bits))
    return out


def _build(
    est: RoundEstimate, value_bits: int, smudging: Smudging, need: float
) -> AggregationPlan | None:
    """The real plan of an analytic candidate (its primes), or None if it fails the checks."""
    q_bits = list(est.wire_q_bits)
    for _ in range(8):
        lit = ParametersLiteral(
            log_n=est.log_n,
            q_bits=tuple(q_bits + [MAX_MODULUS_BITS]),
            p_bits=(MAX_MODULUS_BITS,),
            t_bits=est.t_bits,
            batching=False,
            name=f"agg-K{est.peers}-b{value_bits}-p{est.pack}",
        )
        if sum(lit.q_bits) + MAX_MODULUS_BITS > HE_STANDARD_128[1 << est.log_n]:
            return None
        try:
            params = Parameters(lit)
        except ParameterError:
            q_bits[-1] += 1  # no NTT-friendly primes of these sizes: take one bit more
            if q_bits[-1] > MAX_MODULUS_BITS:
                q_bits = _spread(sum(q_bits))
            continue
        plan = AggregationPlan(
            params, est.peers, value_bits, est.pack, est.width, len(q_bits), need, smudging
        )
        try:
            _ = plan.compressed_bits, plan.sigma  # the real primes pass the same checks
        except NoiseBudgetError:
            return None
        return plan
    return None


def _candidates(
    peers: int,
    width: int,
    smudging: Smudging,
    log_n_choices: tuple[int, ...],
    max_pack: int | None,
    t_max: int,
    values: int | None,
) -> list[RoundEstimate]:
    """Every analytic candidate, cheapest round first."""
    cands: list[RoundEstimate] = []
    for log_n in log_n_choices:
        if (1 << log_n) not in HE_STANDARD_128:
            raise ValueError(f"log_n={log_n} has no 128-bit HE-standard entry")
        pack = 1
        while pack * width + 1 <= t_max and (max_pack is None or pack <= max_pack):
            cands += estimate_round(log_n, peers, width, pack, smudging)
            pack += 1
    # ties keep the smaller ring (cheaper per ciphertext), then the fewer wire bits
    cands.sort(key=lambda c: (round(c.round_bytes_per_value(values), 9), c.log_n, c.wire_q_bits))
    return cands


def project_round(
    peers: int,
    value_bits: int,
    *,
    values_per_round: int,
    rounds: int,
    max_t_bits: int,
    notion: str = "statistical",
    lam: int = 40,
) -> RoundEstimate:
    """The analytic best round for a plaintext modulus of up to `max_t_bits` bits, without
    building parameters (so it also projects t wider than this build accepts); the budget D is
    rounds x its own ciphertexts, iterated as `choose_parameters_for_updates` does."""
    width = value_bits + max(1, math.ceil(math.log2(peers)))
    budget = rounds * -(-values_per_round // (1 << min(LOG_N_CHOICES)))
    best: RoundEstimate | None = None
    for _ in range(8):
        spec = Smudging(budget, notion, lam)
        cands = _candidates(peers, width, spec, LOG_N_CHOICES, None, max_t_bits, values_per_round)
        if not cands:
            raise NoiseBudgetError(f"no analytic candidate for K={peers}, b={value_bits}")
        best = cands[0]
        need = rounds * -(-values_per_round // ((1 << best.log_n) * best.pack))
        if need >= budget:
            break
        budget = need
    assert best is not None
    return best


def choose_parameters(
    peers: int,
    value_bits: int,
    *,
    smudging: Smudging,
    log_n_choices: tuple[int, ...] = LOG_N_CHOICES,
    max_pack: int | None = None,
    values_per_round: int | None = None,
) -> AggregationPlan:
    """Pick (N, Q, t, packing, wire level) minimizing whole-round bytes per value per peer.

    Values are offset to be non-negative (v + 2^(b-1)), so a sub-slot needs b + ceil(log2 K)
    bits; pack grows while pack * width + 1 fits the widest t (`max_plain_bits`, capped by
    `max_pack`). `values_per_round`: the update size whose padding to whole rows counts (None:
    per value of whole rows). Raises NoiseBudgetError when no 128-bit set fits, naming what to
    reduce.
    """
    _check_count("peers", peers)
    _check_count("value_bits", value_bits)
    if max_pack is not None:
        _check_count("max_pack", max_pack)
    if values_per_round is not None:
        _check_count("values_per_round", values_per_round)
    if not isinstance(smudging, Smudging):
        raise TypeError(f"smudging must be a Smudging spec, got {smudging!r}")
    width = value_bits + max(1, math.ceil(math.log2(peers)))
    t_max = max_plain_bits()
    # a sub-slot's sum is decoded into an int64: at most 62 bits (and one bit below t)
    room = min(t_max - 1, SUM_BITS)
    if width > room:
        raise NoiseBudgetError(
            f"value_bits + ceil(log2 K) = {width} leaves no room in a sub-slot of at most "
            f"{room} bits: reduce value_bits to at most {room - (width - value_bits)}"
        )
    cands = _candidates(peers, width, smudging, log_n_choices, max_pack, t_max, values_per_round)
    best: AggregationPlan | None = None
    tried = 0
    for est in cands:
        if tried >= VALIDATED and best is not None:
            break
        n = 1 << est.log_n
        std = math.sqrt(_wire_variance(n, peers))
        need = required_log_q(n, 2**est.t_bits, NoiseEstimate(std * std, 1), peers, smudging)
        plan = _build(est, value_bits, smudging, need)
        tried += 1
        if plan is not None and (
            best is None
            or plan.round_bytes_per_value(values_per_round)
            < best.round_bytes_per_value(values_per_round) - 1e-9
        ):
            best = plan
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
    """A plan for updates of `values_per_round` values (padding counted) whose decryption
    budget D = rounds x its own ciphertext rows per round.

    D depends on the plan (N, packing) and the plan on D; start from the most rows any plan
    could need (N = 2^12, one value per coefficient) and shrink while the plan still covers it.
    """
    _check_count("values_per_round", values_per_round)
    _check_count("rounds", rounds)
    budget = rounds * -(-values_per_round // (1 << min(LOG_N_CHOICES)))

    def plan_for(d: int) -> AggregationPlan:
        spec = Smudging(d, notion, lam, fail_bits)
        return choose_parameters(
            peers, value_bits, smudging=spec, values_per_round=values_per_round
        )

    plan = plan_for(budget)
    for _ in range(8):
        need = rounds * plan.rows_for(values_per_round)
        if need >= plan.smudging.budget:
            break
        tighter = plan_for(need)
        if rounds * tighter.rows_for(values_per_round) > need:
            break
        plan = tighter
    return plan
