"""Number theory on Python integers: primality, inverses, prime generation. Set-up only."""

from __future__ import annotations

from collections.abc import Iterable

# one Miller-Rabin for the whole project: the kernels' table builder owns it
from kernels.ntt_tables import is_prime  # noqa: E402

__all__ = ["centered", "generate_ntt_primes", "invmod", "is_prime"]


def generate_ntt_primes(bits: list[int], n: int, avoid: Iterable[int] = ()) -> list[int]:
    """Distinct primes q = 1 mod 2n, the largest available below 2^b for each requested b."""
    used = set(avoid)
    out = []
    step = 2 * n
    for b in bits:
        cand = (1 << b) - 1
        cand -= (cand - 1) % step
        while cand > (1 << (b - 1)):
            if cand not in used and is_prime(cand):
                break
            cand -= step
        else:
            raise ValueError(f"not enough {b}-bit primes = 1 mod {step}")
        used.add(cand)
        out.append(cand)
    return out


def invmod(a: int, m: int) -> int:
    return pow(a % m, -1, m)


def centered(x: int, m: int) -> int:
    x %= m
    return x - m if x > m // 2 else x
