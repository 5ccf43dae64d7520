"""Element-wise modular arithmetic on RNS arrays of shape (M, L, N), uint32 words, q < 2^30.

Products of two residues of the same modulus are reduced by Barrett with k = bitlen(q) (valid
for x < 2^(2k), quotient error <= 2); products across moduli use `_reduce_any`. Second operands
may have M == 1 (broadcast, e.g. a key).
The wrappers check dtype and contiguity because the kernels check nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint32, uint64

from kernels.tables import barrett_constants  # noqa: F401  (host table, part of the kernel set)

_U32 = np.uint32

_MU_MASK = (1 << 56) - 1


@njit(inline="always")
def _barrett(x, q, mu_packed):
    # Barrett reduction for x < 2^(2k), k = bitlen(q) <= 30: quotient error <= 2
    k = mu_packed >> uint64(56)
    mu = mu_packed & uint64(_MU_MASK)
    est = ((x >> (k - uint64(1))) * mu) >> (k + uint64(1))
    r = x - est * q
    if r >= q:
        r -= q
    if r >= q:
        r -= q
    return r


@njit(inline="always")
def _reduce_any(x, q, mu_packed):
    # any x < 2^64: Barrett when x < 2^(2k), hardware division otherwise (cross-modulus products)
    k = mu_packed >> uint64(56)
    if x >> (k + k):
        return x % q
    return _barrett(x, q, mu_packed)


@njit(parallel=True, cache=True, nogil=True)
def _add(a, b, q, out):
    M, L, N = a.shape
    bm = b.shape[0]
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        mb = m if bm > 1 else 0
        ql = q[l]
        for i in range(N):
            s = a[m, l, i] + b[mb, l, i]
            out[m, l, i] = s - ql if s >= ql else s


@njit(parallel=True, cache=True, nogil=True)
def _sub(a, b, q, out):
    M, L, N = a.shape
    bm = b.shape[0]
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        mb = m if bm > 1 else 0
        ql = q[l]
        for i in range(N):
            x = a[m, l, i]
            y = b[mb, l, i]
            out[m, l, i] = x - y if x >= y else x + ql - y


@njit(parallel=True, cache=True, nogil=True)
def _neg(a, q, out):
    M, L, N = a.shape
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        ql = q[l]
        for i in range(N):
            x = a[m, l, i]
            out[m, l, i] = ql - x if x != 0 else uint32(0)


@njit(parallel=True, cache=True, nogil=True)
def _mul(a, b, q, mu, out):
    M, L, N = a.shape
    bm = b.shape[0]
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        mb = m if bm > 1 else 0
        ql = uint64(q[l])
        mul = mu[l]
        for i in range(N):
            x = uint64(a[m, l, i]) * uint64(b[mb, l, i])
            out[m, l, i] = uint32(_barrett(x, ql, mul))


@njit(parallel=True, cache=True, nogil=True)
def _mul_add(a, b, q, mu, acc):
    # acc += a * b
    M, L, N = a.shape
    bm = b.shape[0]
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        mb = m if bm > 1 else 0
        ql = uint64(q[l])
        mul = mu[l]
        for i in range(N):
            x = uint64(a[m, l, i]) * uint64(b[mb, l, i]) + uint64(acc[m, l, i])
            acc[m, l, i] = uint32(_barrett(x, ql, mul))


@njit(parallel=True, cache=True, nogil=True)
def _mul_scalar(a, s, q, mu, out):
    # s: uint32 (L,) one scalar per limb
    M, L, N = a.shape
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        ql = uint64(q[l])
        mul = mu[l]
        sl = uint64(s[l])
        for i in range(N):
            out[m, l, i] = uint32(_barrett(uint64(a[m, l, i]) * sl, ql, mul))


@njit(parallel=True, cache=True, nogil=True)
def _sum_batch(a, q, out):
    # a: (K, M, L, N) -> out (M, L, N) = sum over K; rows outer, the K operands streamed through
    # one row accumulator with contiguous (vectorizable) inner loops
    K, M, L, N = a.shape
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        ql = q[l]
        acc = np.zeros(N, dtype=np.uint32)
        for k in range(K):
            for i in range(N):
                s = acc[i] + a[k, m, l, i]
                acc[i] = s - ql if s >= ql else s
        for i in range(N):
            out[m, l, i] = acc[i]


@njit(parallel=True, cache=True, nogil=True)
def _from_signed(x, q, out):
    # x int64 (M, N) small or large signed integers -> residues (M, L, N)
    M, L, N = out.shape
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        ql = np.int64(q[l])
        for i in range(N):
            r = x[m, i] % ql
            if r < 0:
                r += ql
            out[m, l, i] = uint32(r)


@njit(parallel=True, cache=True, nogil=True)
def _automorphism(a, idx, neg, q, out):
    M, L, N = a.shape
    for ml in prange(M * L):
        m = ml // L
        l = ml % L
        ql = q[l]
        for i in range(N):
            x = a[m, l, i]
            if neg[i] and x != 0:
                x = ql - x
            out[m, l, idx[i]] = x


def _check(*arrays: np.ndarray) -> None:
    for a in arrays:
        if a.dtype != _U32 or not a.flags.c_contiguous or a.ndim != 3:
            raise TypeError("kernel operands must be C-contiguous uint32 arrays (M, L, N)")


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    _check(a, b)
    if b.shape[1:] != a.shape[1:] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")


def add(a, b, q, out):
    """out = (a + b) mod q per limb; `b` may broadcast over the leading batch axis."""
    _check_pair(a, b)
    _add(a, b, q, out)


def sub(a, b, q, out):
    """out = (a - b) mod q per limb; `b` may broadcast over the leading batch axis."""
    _check_pair(a, b)
    _sub(a, b, q, out)


def neg(a, q, out):
    """out = (-a) mod q per limb."""
    _check(a)
    _neg(a, q, out)


def mul(a, b, q, mu, out):
    """out = a * b mod q per limb (Barrett with the packed constants `mu`)."""
    _check_pair(a, b)
    _mul(a, b, q, mu, out)


def mul_add(a, b, q, mu, acc):
    """acc = (acc + a * b) mod q per limb, in place."""
    _check_pair(a, b)
    _check(acc)
    _mul_add(a, b, q, mu, acc)


def mul_scalar(a, s, q, mu, out):
    """out = a * s_i mod q_i, one scalar per limb."""
    _check(a)
    _mul_scalar(a, s, q, mu, out)


def sum_batch(a, q, out):
    """out = the sum over the leading axis of a (K, M, L, N) batch, mod q per limb."""
    if a.dtype != _U32 or a.ndim != 4 or not a.flags.c_contiguous:
        raise TypeError("sum_batch takes a C-contiguous uint32 array (K, M, L, N)")
    _sum_batch(a, q, out)


def from_signed(x, q, out):
    """Signed int64 coefficients (M, N) to residues (M, L, N) mod every q_i."""
    if x.dtype != np.int64 or x.ndim != 2:
        raise TypeError("from_signed takes int64 (M, N)")
    _from_signed(x, q, out)


def automorphism(a, idx, neg_mask, q, out):
    """X -> X^g on coefficients: out[idx[j]] = +-a[j] (sign from `neg_mask`), mod q."""
    _check(a)
    _automorphism(a, idx, neg_mask, q, out)


@njit(parallel=True, cache=True, nogil=True)
def _drop_last_limb(a, q, mu, ql_mod, ql_inv, out):
    # out_l = (a_l - [a_last]_centered) * q_last^-1 mod q_l: divide-and-round by q_last
    M, L, N = a.shape
    Lo = L - 1
    ql = uint64(q[Lo])
    half = ql >> uint64(1)
    for ml in prange(M * Lo):
        m = ml // Lo
        l = ml % Lo
        qi = uint64(q[l])
        mul = mu[l]
        qlm = uint64(ql_mod[l])
        iv = uint64(ql_inv[l])
        for i in range(N):
            r = uint64(a[m, Lo, i])
            c = _reduce_any(r, qi, mul)
            if r > half:  # centered: r - q_last
                c = c + qi - qlm
                if c >= qi:
                    c -= qi
            x = uint64(a[m, l, i])
            d = x - c if x >= c else x + qi - c
            out[m, l, i] = uint32(_barrett(d * iv, qi, mul))


def drop_last_limb(a, q, mu, ql_mod, ql_inv, out):
    """Modulus switch from q_1..q_L to q_1..q_{L-1}: out (M, L-1, N) = round(a / q_L)."""
    _check(a, out)
    if out.shape != (a.shape[0], a.shape[1] - 1, a.shape[2]):
        raise ValueError(f"output shape {out.shape} does not drop one limb of {a.shape}")
    _drop_last_limb(a, q, mu, ql_mod, ql_inv, out)
