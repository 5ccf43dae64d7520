"""Slow, obviously-correct reference implementations with Python ints (for tests only)."""

from __future__ import annotations

from collections.abc import Sequence


def _bitrev(i: int, bits: int) -> int:
    r = 0
    for _ in range(bits):
        r = (r << 1) | (i & 1)
        i >>= 1
    return r


def negacyclic_mul(a: Sequence[int], b: Sequence[int], q: int) -> list[int]:
    """Schoolbook product of a and b in Z_q[X]/(X^N+1)."""
    n = len(a)
    assert len(b) == n
    out = [0] * n
    for i in range(n):
        ai = int(a[i])
        for j in range(n):
            k = i + j
            p = ai * int(b[j])
            if k < n:
                out[k] += p
            else:
                out[k - n] -= p
    return [x % q for x in out]


def ntt_reference(a: Sequence[int], q: int, psi: int) -> list[int]:
    """Direct evaluation: out[i] = sum_j a_j psi^((2*brv(i)+1)*j) mod q (bit-reversed order)."""
    n = len(a)
    bits = n.bit_length() - 1
    out = []
    for i in range(n):
        x = pow(psi, 2 * _bitrev(i, bits) + 1, q)
        acc = 0
        xp = 1
        for j in range(n):
            acc += int(a[j]) * xp
            xp = xp * x % q
        out.append(acc % q)
    return out


def crt_reconstruct(residues: Sequence[int], moduli: Sequence[int]) -> int:
    """The unique x in [0, prod(moduli)) with x = residues[i] mod moduli[i]."""
    Q = 1
    for m in moduli:
        Q *= int(m)
    x = 0
    for r, m in zip(residues, moduli, strict=True):
        m = int(m)
        Qi = Q // m
        x += int(r) * Qi * pow(Qi, -1, m)
    return x % Q
