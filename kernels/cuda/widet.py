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

__all__ = ["wide_scale_round", "wide_add_scaled_plain", "wide_pack", "wide_unpack"]

_M32 = 0xFFFFFFFF


@cuda.jit(cache=C.CACHE)
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


@cuda.jit(cache=C.CACHE)
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


@cuda.jit(cache=C.CACHE)
def _wide_pack(v, pack, width, out, M, count, N, W):
    # out[m, a, i]: bits [32a, 32a + 32) of sum_j v[m, j*N + i] 2^(j*width). Grid (N / threads,
    # W, min(M, 65535)): one thread per output word; the sub-value range [j0, j1] is found by
    # one 32-bit division per thread, outside the loop.
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if i >= N32:
        return
    a = uint32(cuda.blockIdx.y)
    w32 = uint32(width)
    lo_bit = uint32(a * uint32(32))
    j0 = uint32(lo_bit // w32)
    j1 = uint32((lo_bit + uint32(31)) // w32)
    if j1 > uint32(pack - 1):
        j1 = uint32(pack - 1)
    c32 = uint32(count)
    m = uint32(cuda.blockIdx.z)
    while m < uint32(M):
        acc = uint64(0)
        j = j0
        while j <= j1:
            idx = uint32(j * N32 + i)
            if idx < c32:
                val = uint64(v[m * c32 + idx])
                sh = int64(j * w32) - int64(lo_bit)
                if sh >= 0:
                    acc |= val << uint64(sh)
                else:
                    acc |= val >> uint64(-sh)
            j = uint32(j + 1)
        out[(m * uint32(W) + a) * N32 + i] = uint32(acc & uint64(_M32))
        m = uint32(m + uint32(cuda.gridDim.z))


@cuda.jit(cache=C.CACHE)
def _wide_unpack(words, width, out, M, pack, N, W):
    # out[m, j*N + i] = bits [j*width, (j+1)*width) of coefficient i. Grid (N / threads, pack,
    # min(M, 65535)): one thread per sub-value; which words it reads (a, a+1, a+2) and the
    # offsets are per-thread constants, so the row loop is loads, two shifts, a mask, a store.
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if i >= N32:
        return
    j = uint32(cuda.blockIdx.y)
    W32 = uint32(W)
    off = uint32(j * uint32(width))
    a = off >> uint32(5)
    sh = uint64(off & uint32(31))
    two = a + uint32(1) < W32
    three = sh > uint64(0) and sh + uint64(width) > uint64(64) and a + uint32(2) < W32
    mask = (uint64(1) << uint64(width)) - uint64(1)
    # Branch-free loop: without a next word the load repeats word a, whose bits land at
    # 32 - sh >= width and are masked off; without a third word its term is ANDed with 0.
    o1 = uint32(N32 if two else uint32(0))
    o2 = uint32(N32 + N32 if three else uint32(0))
    left = uint64(64) - sh if three else uint64(0)
    keep3 = uint64(0xFFFFFFFFFFFFFFFF) if three else uint64(0)
    src = uint32(a * N32 + i)
    dst = uint32(j * N32 + i)
    step_in = uint32(W32 * N32)
    step_out = uint32(uint32(pack) * N32)
    m = uint32(cuda.blockIdx.z)
    src = uint32(src + m * step_in)
    dst = uint32(dst + m * step_out)
    gz = uint32(cuda.gridDim.z)
    while m < uint32(M):
        lo = uint64(words[src]) | (uint64(words[src + o1]) << uint64(32))
        val = (lo >> sh) | ((uint64(words[src + o2]) << left) & keep3)
        out[dst] = int64(val & mask)
        src = uint32(src + gz * step_in)
        dst = uint32(dst + gz * step_out)
        m = uint32(m + gz)


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


def wide_pack(v, pack: int, width: int, out) -> None:
    """out (M, W, N) uint32 words of sum_j v[:, j*N + i] 2^(j*width) (see kernels.cpu.widet)."""
    C.check_data(v, "v")
    C.check_data(out, "out")
    if v.dtype != np.int64 or v.ndim != 2 or not v.flags.c_contiguous:
        raise TypeError("wide_pack takes C-contiguous int64 v (M, count)")
    if out.dtype != np.uint32 or out.ndim != 3 or not out.flags.c_contiguous:
        raise TypeError("wide_pack writes C-contiguous uint32 out (M, W, N)")
    M, count = v.shape
    W, N = int(out.shape[1]), int(out.shape[2])
    if out.shape[0] != M or count > pack * N or not 1 <= width <= 63:
        raise ValueError(f"wide_pack: v {v.shape} does not fit out {out.shape} at pack {pack}")
    if M == 0 or N == 0:
        return
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _wide_pack, (gx, W, min(M, C.MAX_GRID_Y)), threads, A(v.reshape(v.size)), int(pack),
        int(width), A(out.reshape(out.size)), M, count, N, W,
    )  # fmt: skip


def wide_unpack(words, pack: int, width: int, out) -> None:
    """out (M, pack*N) int64: sub-value j of coefficient i at j*N + i, from words (M, W, N)."""
    C.check_data(words, "words")
    C.check_data(out, "out")
    if words.dtype != np.uint32 or words.ndim != 3 or not words.flags.c_contiguous:
        raise TypeError("wide_unpack takes C-contiguous uint32 words (M, W, N)")
    M, W, N = (int(d) for d in words.shape)
    if out.dtype != np.int64 or out.shape != (M, pack * N) or not out.flags.c_contiguous:
        raise TypeError(f"wide_unpack writes C-contiguous int64 out {(M, pack * N)}")
    if not 1 <= width <= 63 or pack * width > 32 * W:
        raise ValueError(f"{pack} sub-values of {width} bits do not fit {W} words")
    if M == 0 or N == 0:
        return
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _wide_unpack, (gx, pack, min(M, C.MAX_GRID_Y)), threads, A(words.reshape(words.size)),
        int(width), A(out.reshape(out.size)), M, int(pack), N, W,
    )  # fmt: skip
