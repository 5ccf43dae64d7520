"""Number theory on Python integers: primality, inverses, prime generation. Set-up only."""

from __future__ import annotations

from collections.abc import Iterable

_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24, probabilistic-strong beyond (fixed bases)."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _SMALL_PRIMES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


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
