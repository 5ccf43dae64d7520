"""Wide plaintext modulus t = 2^k on the GPU, bit-identical to ``kernels.cpu.widet``.

Same layout (wide coefficients are W little-endian 32-bit words, (M, W, N) uint32) and the same
arithmetic: the integer parts are exact, and the one float64 sum (the rounding correction of
`wide_scale_round`) adds the same non-contracted products in the same order as the CPU.
Launch design as ``kernels.cuda.rns``: x of the grid over the N coefficients, 32-bit indices,
no local arrays (the W words are produced one after the other with a running carry and
written out, or reduced mod q_l, as they appear), no 64-bit division or remainder.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int64, uint32, uint64

from kernels.cuda import _common as C

__all__ = ["wide_scale_round", "wide_add_scaled_plain"]

_M32 = 0xFFFFFFFF


@cuda.jit
def _wide_scale_round(x, omega, theta, top_mask, out, M, L, N, W):
    # out[m, w, n] = word w of (sum_i x_i omega_i + round(sum_i x_i theta_i)) mod 2^k.
    # Grid (N / threads, min(M, 65535)); see kernels.cpu.widet._wide_scale_round for the
    # carry bounds (low words summed, high words < 2^30 carried).
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if n >= N32:
        return
    L32 = uint32(L)
    W32 = uint32(W)
    m32 = uint64(_M32)
    m = uint32(cuda.blockIdx.y)
    while m < uint32(M):
        base = uint32(m * L32 * N32 + n)
        f = 0.0
        xo = base
        i = uint32(0)
        while i < L32:
            f = C.fadd(f, C.fmul(float64(x[xo]), theta[i]))
            xo = uint32(xo + N32)
            i = uint32(i + 1)
        carry = uint64(int64(math.floor(f + 0.5)))
        oo = uint32(m * W32 * N32 + n)
        w = uint32(0)
        while w < W32:
            lo = carry
            hi = uint64(0)
            xo = base
            i = uint32(0)
            while i < L32:
                p = uint64(x[xo]) * uint64(omega[w, i])
                lo += p & m32
                hi += p >> uint64(32)
                xo = uint32(xo + N32)
                i = uint32(i + 1)
            v = uint32(lo & m32)
            if w == W32 - uint32(1):
                v = uint32(v & top_mask)
            out[oo] = v
            carry = (lo >> uint64(32)) + hi
            oo = uint32(oo + N32)
            w = uint32(w + 1)
        m = uint32(m + uint32(cuda.gridDim.y))


@cuda.jit
def _wide_add_scaled_plain(m, rt, top_mask, hbit, tmod, pw, tinv, q, acc, M, L, N, W):
    # acc[mi, l, n] += round(Q m / 2^k) mod q_l (see kernels.cpu.widet._wide_add_scaled_plain).
    # Grid (N / threads, L, min(M, 65535)): q_l and its constants are per-thread; each thread
    # forms the truncated product w = (Q mod 2^k) m word by word and reduces every word mod q_l
    # as it appears (mod_u64: exact, float-estimated, no division).
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if n >= N32:
        return
    l = uint32(cuda.blockIdx.y)
    L32 = uint32(L)
    W32 = uint32(W)
    m32 = uint64(_M32)
    ql = uint32(q[l])
    qinv1, qinv2 = C.inv_pair(ql)
    tm = uint32(tmod[l])
    ti = uint32(tinv[l])
    tis = C.shoup_const(ti, ql)
    low_mask = uint32((uint32(1) << hbit) - uint32(1))
    mi = uint32(cuda.blockIdx.z)
    while mi < uint32(M):
        mb = uint32(mi * W32 * N32 + n)
        carry = uint64(0)
        s = uint32(0)
        low = uint32(0)
        half = uint32(0)
        w = uint32(0)
        while w < W32:
            lo = carry
            hi = uint64(0)
            mo = mb
            a = uint32(0)
            while a <= w:
                p = uint64(m[mo]) * uint64(rt[w - a])
                lo += p & m32
                hi += p >> uint64(32)
                mo = uint32(mo + N32)
                a = uint32(a + 1)
            v = uint32(lo & m32)
            carry = (lo >> uint64(32)) + hi
            if w == W32 - uint32(1):
                v = uint32(v & top_mask)
                half = uint32((v >> hbit) & uint32(1))
                low = uint32(low | (v & low_mask))
            else:
                low = uint32(low | v)
            s = C.mod_u64(uint64(s) + uint64(v) * uint64(pw[l, w]), ql, qinv1, qinv2)
            w = uint32(w + 1)
        if half != uint32(0) and low != uint32(0):  # w > 2^(k-1): -c = 2^k - w
            neg_c = uint32(tm - s) if tm >= s else uint32(tm + ql - s)
        else:  # -c = -w
            neg_c = uint32(ql - s) if s != uint32(0) else uint32(0)
        o = uint32((mi * L32 + l) * N32 + n)
        r = uint32(C.shoup_mul(neg_c, ti, tis, ql) + uint32(acc[o]))
        if r >= ql:
            r = uint32(r - ql)
        acc[o] = r
        mi = uint32(mi + uint32(cuda.gridDim.z))


def wide_scale_round(x, c, out) -> None:
    """out (M, W, N) uint32 = round(2^k * x / Q) mod 2^k for x (M, L, N) in basis Q."""
    C.check_data(x, "x")
    C.check_data(out, "out")
    if x.dtype != np.uint32 or not x.flags.c_contiguous or x.ndim != 3:
        raise TypeError("wide_scale_round takes C-contiguous uint32 x (M, L, N)")
    M, L, N = x.shape
    omega, theta = C.consts(c, "omega32", "theta")
    W = int(omega.shape[0])
    if out.dtype != np.uint32 or out.shape != (M, W, N) or not out.flags.c_contiguous:
        raise TypeError(f"out must be C-contiguous uint32 with shape {(M, W, N)}")
    if M == 0 or N == 0:
        return
    A = C.arg
    grid, threads = C.grid_rows_cols(M, N)
    C.launch(
        _wide_scale_round, grid, threads, A(x.reshape(x.size)), A(omega), A(theta),
        np.uint32(c.top_mask), A(out.reshape(out.size)), M, L, N, W,
    )  # fmt: skip


def wide_add_scaled_plain(m, c, acc) -> None:
    """acc (M, L, N) += round(Q * m / 2^k) in RNS, m (M, W, N) uint32 words of m mod 2^k."""
    C.check_data(m, "m")
    C.check_data(acc, "acc")
    if m.dtype != np.uint32 or acc.dtype != np.uint32 or not acc.flags.c_contiguous:
        raise TypeError("wide_add_scaled_plain takes uint32 m and C-contiguous uint32 acc")
    M, L, N = acc.shape
    rt, tmod, pw, tinv, q = C.consts(c, "rt", "tmod", "pw", "tinv", "q")
    W = int(rt.shape[0])
    if m.shape != (M, W, N):
        raise ValueError(f"m shape {m.shape} does not match acc {acc.shape}")
    if M == 0 or L == 0 or N == 0:
        return
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _wide_add_scaled_plain, (gx, L, min(M, C.MAX_GRID_Y)), threads,
        A(C.xp().ascontiguousarray(m).reshape(m.size)), A(rt), np.uint32(c.top_mask),
        np.uint32(c.hbit), A(tmod), A(pw), A(tinv), A(q), A(acc.reshape(acc.size)), M, L, N, W,
    )  # fmt: skip
