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


def centered(x: int, m: int) -> int:
    """The representative of x mod m in (-m/2, m/2]."""
    x %= m
    return x - m if x > m // 2 else x


def round_div(a: int, b: int) -> int:
    """round(a / b) for integers, b > 0, halves rounded up (floor(a/b + 1/2))."""
    return (2 * a + b) // (2 * b)


def automorphism_reference(a: Sequence[int], g: int, q: int) -> list[int]:
    """a(X) -> a(X^g) in Z_q[X]/(X^N+1), g odd: X^i -> (-1)^floor(i*g/N) X^(i*g mod N)."""
    n = len(a)
    out = [0] * n
    for i in range(n):
        j = i * g % (2 * n)
        if j < n:
            out[j] = int(a[i]) % q
        else:
            out[j - n] = -int(a[i]) % q
    return out


def to_residues(values: Sequence[int], moduli: Sequence[int]) -> list[list[int]]:
    """Integers (any sign) -> residue rows, one per modulus: (L, N) nested lists."""
    return [[int(v) % int(q) for v in values] for q in moduli]
