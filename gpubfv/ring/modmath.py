"""Number theory on Python integers: primality, inverses, prime generation. Set-up only."""

from __future__ import annotations

# one Miller-Rabin for the whole project: the kernels' table builder owns it
from kernels.tables import generate_ntt_primes, is_prime  # noqa: E402

__all__ = ["centered", "generate_ntt_primes", "invmod", "is_prime"]


def invmod(a: int, m: int) -> int:
    """a^-1 mod m (ValueError when not invertible)."""
    return pow(a % m, -1, m)


def centered(x: int, m: int) -> int:
    """x mod m in (-m/2, m/2]."""
    x %= m
    return x - m if x > m // 2 else x
