"""Negacyclic NTT / INTT on the CPU (numba), 32-bit words, Harvey lazy butterflies + Shoup twiddles.

Data: uint32 array (M, L, N), C-contiguous, limb l reduced mod q_l; transformed in place.
Forward: Cooley-Tukey, natural order in, bit-reversed order out, values kept in [0, 4q) between
stages. Inverse: Gentleman-Sande, bit-reversed in, natural out, values kept in [0, 2q).
q < 2^30 so 4q < 2^32.

Vectorization: the inner loop of every stage with half-size t >= 8 runs contiguously over elements
sharing one twiddle (LLVM turns it into AVX2/AVX-512 code). The stages with t in {4, 2, 1} are
written as loops over whole blocks of 2t elements with all lanes of the block touched in one
iteration, which LLVM vectorizes as interleaved loads/stores (shuffles).
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit, prange
from numba.core.errors import NumbaPerformanceWarning

from kernels.ntt_tables import NTTTables

__all__ = ["ntt_forward", "ntt_inverse"]

_U32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(inline="always")
def _mulshoup(y, w, wp, q):
    # y < 2^32 (uint64); returns w*y mod q in [0, 2q)
    hi = (wp * y) >> _S32
    return ((w * y) - hi * q) & _U32


@njit(inline="always")
def _ct(a, j, k, w, wp, q, two_q):
    # forward lazy butterfly on a[j], a[k]; in/out [0, 4q)
    x = np.uint64(a[j])
    y = np.uint64(a[k])
    x = min(x, x - two_q)
    t = _mulshoup(y, w, wp, q)
    a[j] = np.uint32(x + t)
    a[k] = np.uint32(x - t + two_q)


@njit(inline="always")
def _ct2(x, y, j, w, wp, q, two_q):
    u = np.uint64(x[j])
    v = np.uint64(y[j])
    u = min(u, u - two_q)
    t = _mulshoup(v, w, wp, q)
    x[j] = np.uint32(u + t)
    y[j] = np.uint32(u - t + two_q)


@njit(inline="always")
def _gs2(x, y, j, w, wp, q, two_q):
    u = np.uint64(x[j])
    v = np.uint64(y[j])
    s = u + v
    s = min(s, s - two_q)
    d = u - v + two_q
    x[j] = np.uint32(s)
    y[j] = np.uint32(_mulshoup(d, w, wp, q))


@njit(inline="always")
def _gs(a, j, k, w, wp, q, two_q):
    # inverse lazy butterfly on a[j], a[k]; in/out [0, 2q)
    x = np.uint64(a[j])
    y = np.uint64(a[k])
    s = x + y
    s = min(s, s - two_q)
    d = x - y + two_q
    a[j] = np.uint32(s)
    a[k] = np.uint32(_mulshoup(d, w, wp, q))


@njit(inline="always")
def _fwd_row(a, q32, w, ws):
    n = a.shape[0]
    q = np.uint64(q32)
    two_q = q + q
    m = 1
    t = n >> 1
    while t >= 8:
        for i in range(m):
            W = np.uint64(w[m + i])
            Wp = np.uint64(ws[m + i])
            base = 2 * i * t
            x = a[base : base + t]
            y = a[base + t : base + 2 * t]
            for j in range(t):
                _ct2(x, y, j, W, Wp, q, two_q)
        m <<= 1
        t >>= 1
    if t == 4:
        for i in range(m):
            W = np.uint64(w[m + i])
            Wp = np.uint64(ws[m + i])
            b = 8 * i
            _ct(a, b, b + 4, W, Wp, q, two_q)
            _ct(a, b + 1, b + 5, W, Wp, q, two_q)
            _ct(a, b + 2, b + 6, W, Wp, q, two_q)
            _ct(a, b + 3, b + 7, W, Wp, q, two_q)
        m <<= 1
        t >>= 1
    if t == 2:
        for i in range(m):
            W = np.uint64(w[m + i])
            Wp = np.uint64(ws[m + i])
            b = 4 * i
            _ct(a, b, b + 2, W, Wp, q, two_q)
            _ct(a, b + 1, b + 3, W, Wp, q, two_q)
        m <<= 1
        t >>= 1
    # last stage (t == 1) fused with the final reduction [0, 4q) -> [0, q)
    for i in range(m):
        W = np.uint64(w[m + i])
        Wp = np.uint64(ws[m + i])
        b = 2 * i
        x = np.uint64(a[b])
        y = np.uint64(a[b + 1])
        x = min(x, x - two_q)
        tt = _mulshoup(y, W, Wp, q)
        u = x + tt
        v = x - tt + two_q
        u = min(u, u - two_q)
        u = min(u, u - q)
        v = min(v, v - two_q)
        v = min(v, v - q)
        a[b] = np.uint32(u)
        a[b + 1] = np.uint32(v)


@njit(inline="always")
def _inv_row(a, q32, wi, wis, ninv32, ninvs32):
    n = a.shape[0]
    q = np.uint64(q32)
    two_q = q + q
    m = n >> 1
    t = 1
    # t == 1
    if t < n:
        for i in range(m):
            W = np.uint64(wi[m + i])
            Wp = np.uint64(wis[m + i])
            b = 2 * i
            _gs(a, b, b + 1, W, Wp, q, two_q)
        m >>= 1
        t <<= 1
    if t == 2 and t < n:
        for i in range(m):
            W = np.uint64(wi[m + i])
            Wp = np.uint64(wis[m + i])
            b = 4 * i
            _gs(a, b, b + 2, W, Wp, q, two_q)
            _gs(a, b + 1, b + 3, W, Wp, q, two_q)
        m >>= 1
        t <<= 1
    if t == 4 and t < n:
        for i in range(m):
            W = np.uint64(wi[m + i])
            Wp = np.uint64(wis[m + i])
            b = 8 * i
            _gs(a, b, b + 4, W, Wp, q, two_q)
            _gs(a, b + 1, b + 5, W, Wp, q, two_q)
            _gs(a, b + 2, b + 6, W, Wp, q, two_q)
            _gs(a, b + 3, b + 7, W, Wp, q, two_q)
        m >>= 1
        t <<= 1
    while t < n:
        for i in range(m):
            W = np.uint64(wi[m + i])
            Wp = np.uint64(wis[m + i])
            base = 2 * i * t
            x = a[base : base + t]
            y = a[base + t : base + 2 * t]
            for j in range(t):
                _gs2(x, y, j, W, Wp, q, two_q)
        m >>= 1
        t <<= 1
    # scale by n^-1 and reduce to [0, q)
    ni = np.uint64(ninv32)
    nis = np.uint64(ninvs32)
    for j in range(n):
        r = _mulshoup(np.uint64(a[j]), ni, nis, q)
        a[j] = np.uint32(min(r, r - q))


@njit(cache=True, fastmath=False, nogil=True, parallel=True)
def _fwd_serial(a2, L, q, w, ws):
    for r in range(a2.shape[0]):
        l = r % L
        _fwd_row(a2[r], q[l], w[l], ws[l])


@njit(cache=True, fastmath=False, nogil=True, parallel=True)
def _fwd_parallel(a2, L, q, w, ws):
    for r in prange(a2.shape[0]):
        l = r % L
        _fwd_row(a2[r], q[l], w[l], ws[l])


@njit(cache=True, fastmath=False, nogil=True, parallel=True)
def _inv_serial(a2, L, q, wi, wis, ninv, ninvs):
    for r in range(a2.shape[0]):
        l = r % L
        _inv_row(a2[r], q[l], wi[l], wis[l], ninv[l], ninvs[l])


@njit(cache=True, fastmath=False, nogil=True, parallel=True)
def _inv_parallel(a2, L, q, wi, wis, ninv, ninvs):
    for r in prange(a2.shape[0]):
        l = r % L
        _inv_row(a2[r], q[l], wi[l], wis[l], ninv[l], ninvs[l])


def _call(fn, *args) -> None:
    if not fn.signatures:
        # The serial kernels are compiled with parallel=True (without prange) because numba's
        # parfor pre-passes let LLVM vectorize the butterfly loops (~3x faster); silence the
        # resulting "no transformation for parallel execution" warning on first compilation.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            fn(*args)
    else:
        fn(*args)


def _check(a: np.ndarray, tables: NTTTables) -> np.ndarray:
    if not isinstance(tables, NTTTables):
        raise TypeError("tables must be an NTTTables")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.uint32:
        raise TypeError(f"a must be uint32, got {a.dtype}")
    L = len(tables.moduli)
    if a.ndim != 3 or a.shape[1] != L or a.shape[2] != tables.n:
        raise ValueError(f"a must have shape (M, {L}, {tables.n}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError("a must be C-contiguous")
    if not a.flags.writeable:
        raise ValueError("a must be writeable")
    return a.reshape(a.shape[0] * L, tables.n)


def ntt_forward(a: np.ndarray, tables: NTTTables, parallel: bool | None = None) -> None:
    """In-place forward negacyclic NTT of a (M, L, N) uint32 array; output in bit-reversed order.

    ``parallel=None`` picks the multi-threaded kernel when there are at least 2 rows.
    """
    a2 = _check(a, tables)
    if a2.shape[0] == 0:
        return
    L = len(tables.moduli)
    if parallel is None:
        parallel = a2.shape[0] >= 2
    fn = _fwd_parallel if parallel else _fwd_serial
    _call(fn, a2, L, tables.q, tables.w, tables.w_shoup)


def ntt_inverse(a: np.ndarray, tables: NTTTables, parallel: bool | None = None) -> None:
    """In-place inverse of :func:`ntt_forward` (bit-reversed in, natural order out, [0, q))."""
    a2 = _check(a, tables)
    if a2.shape[0] == 0:
        return
    L = len(tables.moduli)
    if parallel is None:
        parallel = a2.shape[0] >= 2
    fn = _inv_parallel if parallel else _inv_serial
    _call(fn, a2, L, tables.q, tables.wi, tables.wi_shoup, tables.n_inv, tables.n_inv_shoup)
