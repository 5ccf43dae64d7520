"""Precomputed twiddle tables for the negacyclic NTT over Z_q[X]/(X^N+1), one row per RNS limb.

Runs once per (moduli, N); Python big ints are fine here. All arrays are uint32, C-contiguous.

Conventions (SEAL / Lattigo):
  psi       primitive 2N-th root of unity mod q, chosen deterministically (see
            :func:`find_primitive_2n_root`).
  w[l, k]   psi^brv(k)            (k in [0, N), bit-reversed powers, forward Cooley-Tukey)
  wi[l, k]  psi^-brv(k)           (inverse Gentleman-Sande)
  *_shoup   floor(x * 2^32 / q)   Shoup companions for multiplication by the constant x.
The forward transform leaves in slot i the evaluation a(psi^(2*brv(i)+1)).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NTTTables", "make_ntt_tables", "find_primitive_2n_root", "is_prime", "bit_reverse"]

_MAX_LOG_N = 17


def is_prime(q: int) -> bool:
    """Deterministic Miller-Rabin for q < 3.3e24 (bases 2..41)."""
    if q < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if q % p == 0:
            return q == p
    d, s = q - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:
        x = pow(a, d, q)
        if x in (1, q - 1):
            continue
        for _ in range(s - 1):
            x = x * x % q
            if x == q - 1:
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


def _prime_factors(n: int) -> list[int]:
    out = []
    p = 2
    while p * p <= n:
        if n % p == 0:
            out.append(p)
            while n % p == 0:
                n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def bit_reverse(i: int, bits: int) -> int:
    """`i` with its lowest `bits` bits reversed."""
    r = 0
    for _ in range(bits):
        r = (r << 1) | (i & 1)
        i >>= 1
    return r


def _check_n(n: int) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 2 or n & (n - 1) or n > 2**_MAX_LOG_N:
        raise ValueError(f"n must be a power of two in [2, 2^{_MAX_LOG_N}], got {n}")
    return n


def _check_q(q: int, n: int) -> int:
    if not isinstance(q, (int, np.integer)) or isinstance(q, bool):
        raise TypeError(f"modulus must be an int, got {type(q).__name__}")
    q = int(q)
    if q < 3 or q >= 2**30:
        raise ValueError(f"modulus must be in [3, 2^30), got {q}")
    if q % (2 * n) != 1:
        raise ValueError(f"modulus {q} is not 1 mod 2n = {2 * n}")
    if not is_prime(q):
        raise ValueError(f"modulus {q} is not prime")
    return q


def find_primitive_2n_root(q: int, n: int) -> int:
    """psi = g^((q-1)/(2n)) mod q for the smallest generator g of Z_q^*.

    Deterministic; psi has multiplicative order exactly 2n (so psi^n = -1 mod q).
    """
    n = _check_n(n)
    q = _check_q(q, n)
    factors = _prime_factors(q - 1)
    g = 2
    while True:
        if all(pow(g, (q - 1) // p, q) != 1 for p in factors):
            break
        g += 1
    psi = pow(g, (q - 1) // (2 * n), q)
    assert pow(psi, n, q) == q - 1
    return psi


@dataclass(frozen=True, eq=False)
class NTTTables:
    """Twiddles and Shoup companions of the negacyclic NTT for one (moduli, N)."""

    n: int
    moduli: tuple[int, ...]
    q: np.ndarray  # uint32 (L,)
    psi: tuple[int, ...]  # the chosen primitive 2n-th roots, per limb
    w: np.ndarray  # uint32 (L, N): psi^brv(k)
    w_shoup: np.ndarray  # uint32 (L, N)
    wi: np.ndarray  # uint32 (L, N): psi^-brv(k)
    wi_shoup: np.ndarray  # uint32 (L, N)
    n_inv: np.ndarray  # uint32 (L,): n^-1 mod q
    n_inv_shoup: np.ndarray  # uint32 (L,)

    @property
    def log_n(self) -> int:
        """log2(N)."""
        return self.n.bit_length() - 1

    @property
    def num_limbs(self) -> int:
        """Number of moduli (rows of every table)."""
        return len(self.moduli)


def _shoup(x: int, q: int) -> int:
    return (x << 32) // q


def make_ntt_tables(moduli: Sequence[int], n: int) -> NTTTables:
    """Tables for `moduli` (NTT-friendly primes < 2^30, q = 1 mod 2N) and degree `n`."""
    n = _check_n(n)
    if isinstance(moduli, (int, np.integer)):
        raise TypeError("moduli must be a sequence of ints")
    mods = tuple(_check_q(q, n) for q in moduli)
    if not mods:
        raise ValueError("need at least one modulus")
    L = len(mods)
    log_n = n.bit_length() - 1
    brv = [bit_reverse(k, log_n) for k in range(n)]
    w = np.empty((L, n), dtype=np.uint32)
    ws = np.empty((L, n), dtype=np.uint32)
    wi = np.empty((L, n), dtype=np.uint32)
    wis = np.empty((L, n), dtype=np.uint32)
    n_inv = np.empty(L, dtype=np.uint32)
    n_inv_s = np.empty(L, dtype=np.uint32)
    psis = []
    for l, q in enumerate(mods):
        psi = find_primitive_2n_root(q, n)
        psis.append(psi)
        psi_inv = pow(psi, -1, q)
        pw = [1] * n
        pwi = [1] * n
        for k in range(1, n):
            pw[k] = pw[k - 1] * psi % q
            pwi[k] = pwi[k - 1] * psi_inv % q
        fw = [pw[brv[k]] for k in range(n)]
        fwi = [pwi[brv[k]] for k in range(n)]
        w[l] = fw
        ws[l] = [_shoup(x, q) for x in fw]
        wi[l] = fwi
        wis[l] = [_shoup(x, q) for x in fwi]
        ni = pow(n, -1, q)
        n_inv[l] = ni
        n_inv_s[l] = _shoup(ni, q)
    for arr in (w, ws, wi, wis, n_inv, n_inv_s):
        arr.setflags(write=False)
    qa = np.array(mods, dtype=np.uint32)
    qa.setflags(write=False)
    return NTTTables(
        n=n,
        moduli=mods,
        q=qa,
        psi=tuple(psis),
        w=w,
        w_shoup=ws,
        wi=wi,
        wi_shoup=wis,
        n_inv=n_inv,
        n_inv_shoup=n_inv_s,
    )
