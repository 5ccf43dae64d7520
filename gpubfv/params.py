"""Parameters: a plain literal turned into a frozen, validated object holding every table.

A `ParametersLiteral` is plain data (sizes, bit lengths or explicit moduli). `Parameters(literal)`
generates the NTT-friendly primes, checks the set against the 128-bit HE-standard bound on
log2(QP) for ternary secrets and builds the per-modulus tables once. Anything wrong raises
`ParameterError` with a reason code, so callers learn *why* a set is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

from gpubfv.ring.modmath import generate_ntt_primes, is_prime

# HomomorphicEncryption.org standard (2018), 128-bit classical security, ternary/uniform secret:
# largest log2(QP) for each ring degree. 2^16 from the same estimator (as used by Lattigo).
HE_STANDARD_128 = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
    65536: 1772,
}

MAX_MODULUS_BITS = 30  # ciphertext/special primes live in 32-bit words (DESIGN §3)
MAX_PLAIN_BITS = 61
# Beyond 61 bits the plaintext modulus is a power of two t = 2^k (coefficient encoding only, no
# batching: 2^k has no NTT); decryption then rounds to k-bit multi-word plaintexts (see
# gpubfv.ring.rns.ScaleRoundToT). 256 bits = 8 words of 32 bits.
MAX_WIDE_PLAIN_BITS = 256
MIN_WIDE_PLAIN_BITS = MAX_PLAIN_BITS + 1
ERROR_CBD_ETA = 21  # centered binomial: variance eta/2 = 10.5, sigma ~ 3.24
ERROR_SIGMA = math.sqrt(ERROR_CBD_ETA / 2)
ERROR_BOUND = ERROR_CBD_ETA  # |e| <= eta for the centered binomial: a hard bound


class ParameterError(ValueError):
    """A parameter set was refused; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"[{reason}] {message}")
        self.reason = reason


@dataclass(frozen=True)
class ParametersLiteral:
    """Plain description of a parameter set.

    Either give explicit primes (`q`, `p`) or bit sizes (`q_bits`, `p_bits`) from which
    NTT-friendly primes (q = 1 mod 2N, largest first below 2^bits) are generated. The plaintext
    modulus is `t` (explicit prime) or `t_bits` (a prime generated with t = 1 mod 2N when
    `batching` is set, else any prime of that size). Wide plaintexts: `t_bits=k` with
    62 <= k <= 256 (or `t=2**k`) selects t = 2^k, which needs `batching=False`.
    """

    log_n: int
    q_bits: tuple[int, ...] = ()
    p_bits: tuple[int, ...] = ()
    q: tuple[int, ...] = ()
    p: tuple[int, ...] = ()
    t: int = 0
    t_bits: int = 0
    batching: bool = True
    allow_insecure: bool = False
    name: str = ""

    def to_dict(self) -> dict:
        """Plain dict of the literal's fields (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ParametersLiteral:
        """The literal back from `to_dict()` output (lists become tuples)."""
        kw = dict(d)
        for key in ("q_bits", "p_bits", "q", "p"):
            kw[key] = tuple(int(v) for v in kw.get(key, ()))
        return cls(**kw)


def _generate_plain_modulus(bits: int, n: int, batching: bool, avoid: set[int]) -> int:
    step = 2 * n if batching else 2
    start = (1 << bits) - 1
    cand = start - ((start - 1) % step)  # largest value = 1 mod step below 2^bits
    while cand > (1 << (bits - 1)):
        if cand not in avoid and is_prime(cand):
            return cand
        cand -= step
    raise ParameterError(
        "no-plain-prime", f"no prime t of {bits} bits with t = 1 mod {step} (try more bits)"
    )


@dataclass(frozen=True, eq=False)
class Parameters:
    """A validated, immutable parameter set. Build with `Parameters(literal)`."""

    literal: ParametersLiteral
    n: int = field(init=False)
    q: tuple[int, ...] = field(init=False)
    p: tuple[int, ...] = field(init=False)
    t: int = field(init=False)

    def __post_init__(self) -> None:
        lit = self.literal
        if not isinstance(lit, ParametersLiteral):
            raise ParameterError("type", "Parameters takes a ParametersLiteral")
        if not (1 <= lit.log_n <= 16):
            raise ParameterError("log-n", f"log_n={lit.log_n} outside 1..16")
        n = 1 << lit.log_n
        if lit.log_n < 10 and not lit.allow_insecure:
            raise ParameterError("insecure", f"N=2^{lit.log_n} is below 2^10; insecure set")
        q = tuple(lit.q) or self._primes(lit.q_bits, n, set(), "q")
        p = tuple(lit.p) or self._primes(lit.p_bits, n, set(q), "p")
        if not q:
            raise ParameterError("no-q", "at least one ciphertext prime is needed")
        for m in q + p:
            if not 2 <= m < 1 << MAX_MODULUS_BITS:  # size first: no slow tests on huge input
                raise ParameterError(
                    "modulus-size", f"modulus {m} has more than {MAX_MODULUS_BITS} bits"
                )
            if not is_prime(m):
                raise ParameterError("not-prime", f"modulus {m} is not prime")
            if (m - 1) % (2 * n):
                raise ParameterError("not-ntt-friendly", f"modulus {m} is not 1 mod 2N={2 * n}")
        if len(set(q + p)) != len(q + p):
            raise ParameterError("not-coprime", "moduli in Q and P must be distinct primes")
        t = self._plain_modulus(lit, n, set(q + p))
        big_q = math.prod(q)
        if big_q.bit_length() <= t.bit_length() + 1:
            raise ParameterError("q-too-small", "Q must exceed t by more than 2 bits")
        log_qp = math.log2(big_q * math.prod(p))
        bound = HE_STANDARD_128.get(n)
        if not lit.allow_insecure:
            if bound is None:
                raise ParameterError("insecure", f"N={n} has no 128-bit entry (needs >= 1024)")
            if log_qp > bound:
                raise ParameterError(
                    "insecure",
                    f"log2(QP)={log_qp:.1f} exceeds the 128-bit HE-standard bound {bound} "
                    f"for N={n}; pass allow_insecure=True only for tests",
                )
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "t", t)

    @staticmethod
    def _plain_modulus(lit: ParametersLiteral, n: int, avoid: set[int]) -> int:
        if lit.t:
            t = int(lit.t)
        elif lit.t_bits:
            if not (2 <= lit.t_bits <= MAX_WIDE_PLAIN_BITS):
                raise ParameterError(
                    "plain-size", f"t_bits={lit.t_bits} outside 2..{MAX_WIDE_PLAIN_BITS}"
                )
            if lit.t_bits > MAX_PLAIN_BITS:
                t = 1 << lit.t_bits
            else:
                t = _generate_plain_modulus(lit.t_bits, n, lit.batching, avoid)
        else:
            raise ParameterError("no-t", "a plaintext modulus t or t_bits is required")
        if t >= 1 << MAX_PLAIN_BITS:  # size first: never a primality test on a huge t
            k = t.bit_length() - 1
            if t != 1 << k or not MIN_WIDE_PLAIN_BITS <= k <= MAX_WIDE_PLAIN_BITS:
                raise ParameterError(
                    "plain-modulus",
                    f"t of {t.bit_length()} bits: beyond 2^61 only t = 2^k with "
                    f"{MIN_WIDE_PLAIN_BITS} <= k <= {MAX_WIDE_PLAIN_BITS}",
                )
            if lit.batching:
                raise ParameterError(
                    "no-batching",
                    f"t = 2^{k} has no slot NTT: wide plaintexts need batching=False "
                    "(coefficient encoding)",
                )
            return t
        if t < 2 or not is_prime(t):
            raise ParameterError("plain-modulus", f"t={t} must be a prime below 2^61 or 2^k")
        if t in avoid:
            raise ParameterError("not-coprime", f"t={t} equals a ciphertext modulus")
        if lit.batching and (t - 1) % (2 * n):
            raise ParameterError(
                "no-batching", f"batching needs t = 1 mod 2N={2 * n}; t={t} is not"
            )
        if lit.batching and t >= 1 << MAX_MODULUS_BITS:
            raise ParameterError(
                "no-batching", "batching needs t < 2^30 (slot NTT in 32-bit words)"
            )
        return t

    def __getstate__(self) -> dict:
        """Pickle/copy state without the Contexts cached on the object (they hold a backend)."""
        state = dict(self.__dict__)
        state.pop("_contexts", None)
        return state

    @staticmethod
    def _primes(bits: Sequence[int], n: int, avoid: set[int], what: str) -> tuple[int, ...]:
        for b in bits:
            if not (2 * n).bit_length() < b <= MAX_MODULUS_BITS:
                raise ParameterError(
                    "modulus-size", f"{what} prime of {b} bits impossible for N={n} (max 30)"
                )
        try:
            return tuple(generate_ntt_primes(list(bits), n, avoid))
        except ValueError as exc:
            raise ParameterError("no-primes", str(exc)) from exc

    # ---- derived quantities -------------------------------------------------------------
    @property
    def log_n(self) -> int:
        """log2 of the ring degree N."""
        return self.literal.log_n

    @property
    def batching(self) -> bool:
        """Whether t = 1 mod 2N was asked for (SIMD slots, `BatchEncoder`)."""
        return self.literal.batching

    @property
    def t_wide(self) -> bool:
        """Whether t = 2^k with k > 61: plaintexts are (..., t_words, N) uint32 words."""
        return self.t >= 1 << MAX_PLAIN_BITS

    @property
    def t_log2(self) -> int:
        """k for a wide t = 2^k (0 for a prime t)."""
        return self.t.bit_length() - 1 if self.t_wide else 0

    @property
    def t_words(self) -> int:
        """32-bit words of a wide plaintext coefficient, ceil(k / 32) (0 for a prime t)."""
        return -(-self.t_log2 // 32)

    @property
    def insecure(self) -> bool:
        """Whether the set was built with allow_insecure (tests only)."""
        return self.literal.allow_insecure

    @cached_property
    def big_q(self) -> int:
        """Q, the product of the ciphertext primes."""
        return math.prod(self.q)

    @cached_property
    def big_p(self) -> int:
        """P, the product of the special primes (1 without any)."""
        return math.prod(self.p)

    @property
    def log_q(self) -> float:
        """log2(Q)."""
        return math.log2(self.big_q)

    @property
    def log_qp(self) -> float:
        """log2(QP), the quantity bounded by the security table."""
        return math.log2(self.big_q * self.big_p)

    @property
    def slots(self) -> int:
        """Plaintext slots (N)."""
        return self.n

    def q_at(self, level: int) -> int:
        """Product of the first `level` ciphertext primes."""
        return math.prod(self.q[:level])

    @cached_property
    def fingerprint(self) -> bytes:
        """16 bytes identifying the concrete moduli; every serialized object carries it."""
        desc = json.dumps(
            {
                "n": self.n,
                "q": self.q,
                "p": self.p,
                "t": self.t,
                "batching": self.batching,
                "insecure": self.insecure,
            },
            sort_keys=True,
        )
        return hashlib.sha256(b"gpubfv-params-v1" + desc.encode()).digest()[:16]

    def describe(self) -> str:
        """One human-readable line: name, N, log Q, L, log P, t, security."""
        label = self.literal.name or f"logN={self.log_n}"
        sec = "INSECURE" if self.insecure else "128-bit"
        t = f"2^{self.t_log2}" if self.t_wide else str(self.t)
        return (
            f"{label}: N={self.n} logQ={self.log_q:.1f} (L={len(self.q)}) "
            f"logP={math.log2(self.big_p) if self.p else 0:.1f} t={t} ({sec})"
        )

    def __repr__(self) -> str:
        return f"Parameters({self.describe()})"

    def to_literal_dict(self) -> dict:
        """Explicit moduli, so that the set rebuilds identically anywhere."""
        lit = self.literal
        return ParametersLiteral(
            log_n=lit.log_n,
            q=self.q,
            p=self.p,
            t=self.t,
            batching=lit.batching,
            allow_insecure=lit.allow_insecure,
            name=lit.name,
        ).to_dict()


# ---- named sets ---------------------------------------------------------------------------
PRESETS: dict[str, ParametersLiteral] = {
    "PN12": ParametersLiteral(log_n=12, q_bits=(27, 27, 27), p_bits=(27,), t_bits=20, name="PN12"),
    "PN13": ParametersLiteral(log_n=13, q_bits=(30,) * 6, p_bits=(30,), t_bits=20, name="PN13"),
    "PN14": ParametersLiteral(log_n=14, q_bits=(30,) * 13, p_bits=(30,), t_bits=20, name="PN14"),
    "PN15": ParametersLiteral(log_n=15, q_bits=(30,) * 27, p_bits=(30, 30), t_bits=20, name="PN15"),
    "PN16": ParametersLiteral(
        log_n=16, q_bits=(30,) * 56, p_bits=(30, 30, 30), t_bits=21, name="PN16"
    ),
    # Insecure sets for fast tests only (allow_insecure is explicit and loud).
    "TOY4": ParametersLiteral(
        log_n=4, q_bits=(28, 28, 28), p_bits=(28,), t_bits=17, allow_insecure=True, name="TOY4"
    ),
    "TOY6": ParametersLiteral(
        log_n=6,
        q_bits=(29, 29, 29, 29),
        p_bits=(29, 29),
        t_bits=17,
        allow_insecure=True,
        name="TOY6",
    ),
    "TOY8": ParametersLiteral(
        log_n=8, q_bits=(30, 30, 30), p_bits=(30,), t_bits=17, allow_insecure=True, name="TOY8"
    ),
}


def preset(name: str) -> Parameters:
    """The named parameter set `name` (a key of PRESETS), built and validated."""
    try:
        return Parameters(PRESETS[name])
    except KeyError:
        raise ParameterError(
            "unknown-preset", f"no preset {name!r}; have {sorted(PRESETS)}"
        ) from None
