"""RNS basis conversion and scale-and-round on the GPU, bit-identical to ``kernels.cpu.rns``.

Launch design: 2-D grids, x over the N coefficients (bounds checked), y over output rows
(grid-stride beyond 65535); one thread per output word, looping over the input limbs (reads of
one input limb are coalesced across the warp). The floating-point rounding corrections are
accumulated in the same order as the CPU with non-contracted multiply/add (no FMA), so they round
identically. Constant tables come from the converter objects and are copied to the device once
per (object, device) (see ``_common.consts``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, float64, int64, uint32, uint64

from kernels.cuda import _common as C

__all__ = ["base_convert", "scale_round_to_t", "hps_scale_to_r", "add_scaled_plain"]

MAX_OMEGA_CHUNKS = 4  # t < 2^64 -> at most 4 chunks of 16 bits
_SRT_MAX_LIMBS = 256  # scale_round_to_t: 24 B per input limb in shared memory; sums < 2^62
# scale_round_to_t's chunk rows (4 words, 3 used) are read as one 8-byte and one 4-byte load
# from one pointer: 16-byte alignment would load the pad word too (two more registers, 75%
# occupancy instead of 100%)
_SRT_ALIGN = None if C.SIM else 8
_BC_MAX_LIMBS = 256  # base_convert keeps 24 bytes per input limb in shared memory
_BC_TAB = 4 * _BC_MAX_LIMBS  # four uint32 table words per input limb
_ALIGN = C.SHARED_ALIGN
_ASP_MAX_LIMBS = 256  # add_scaled_plain keeps 32 bytes per limb in shared memory
_ASP_TAB = 8 * _ASP_MAX_LIMBS  # six uint32 table words per limb, rows of 8 (16-byte aligned)


_LAZY = 16  # products y * [Q/q_i]_{p_j} < 2^60: 16 fit in a uint64 before a reduction


@cuda.jit(device=True, inline=True)
def _bc_terms(x, xo, N32, i, stop, tab_s, iq_s, s, acc, exact):
    # input limbs i..stop-1 of one output word: y_i by Shoup, s += y_i [Q/q_i]_{p_j} (one
    # mad.wide), acc += y_i / q_i (float64, the CPU's order, no FMA) when exact. The limb's
    # four table words (w, its Shoup word, 2^32 - q_i, [Q/q_i]_{p_j}) are one 16-byte load.
    while i < stop:
        k = uint32(i * uint32(4))
        y = C.shoup_mul_nq(uint32(x[xo]), tab_s[k], tab_s[k + uint32(1)], tab_s[k + uint32(2)])
        if exact:
            acc = C.fadd(acc, C.fmul(float64(y), iq_s[i]))
        s = C.madwide(y, tab_s[k + uint32(3)], s)
        xo = uint32(xo + N32)
        i = uint32(i + uint32(1))
    return s, acc, xo


@cuda.jit(cache=C.CACHE)
def _base_convert(x, qin, hi_pack, invq, qout, qhat_t, qmod, exact, out, M, Lin, Lout, N):
    # Grid (N / threads, Lout, min(M, 65535)): p_j is a per-thread constant, the per-limb
    # tables (Shoup pair of [(Q/q_i)^-1]_{q_i}, 2^32 - q_i, [Q/q_i]_{p_j} as four uint32 words
    # (one 16-byte shared load), 1/q_i) sit in shared memory (32-bit addresses in the loop).
    # The sum over i accumulates in 64 bits (reduced every _LAZY terms); the rounding
    # correction adds the CPU's float64 products in its order.
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    j = uint32(cuda.blockIdx.y)
    Lin32 = uint32(Lin)
    tab_s = cuda.shared.array(_BC_TAB, dtype=uint32, alignment=_ALIGN)
    iq_s = cuda.shared.array(_BC_MAX_LIMBS, dtype=float64)
    i = uint32(cuda.threadIdx.x)
    while i < Lin32:
        hp = uint64(hi_pack[i])
        k = uint32(i * uint32(4))
        tab_s[k] = uint32(hp)
        tab_s[k + uint32(1)] = uint32(hp >> uint64(32))
        tab_s[k + uint32(2)] = uint32(uint64(0x100000000) - uint64(qin[i]))
        tab_s[k + uint32(3)] = uint32(qhat_t[j, i])
        iq_s[i] = invq[i]
        i = uint32(i + uint32(cuda.blockDim.x))
    cuda.syncthreads()
    if n >= N32:
        return
    pj = uint32(qout[j])
    pinv2 = 1.0 / float64(pj)
    pinv1 = pinv2 if pj > uint32(1) else 0.0
    qm = uint64(qmod[j])
    m = uint32(cuda.blockIdx.z)
    while m < uint32(M):
        xo = uint32(m * Lin32 * N32 + n)
        s = uint64(0)
        acc = 0.0
        i = uint32(0)
        while i < Lin32:
            stop = min(uint32(i + _LAZY), Lin32)
            if exact:
                s, acc, xo = _bc_terms(x, xo, N32, i, stop, tab_s, iq_s, s, acc, True)
            else:
                s, acc, xo = _bc_terms(x, xo, N32, i, stop, tab_s, iq_s, s, acc, False)
            i = stop
            s = uint64(C.mod_u64(s, pj, pinv1, pinv2))
        r = uint32(s)
        if exact:
            v = uint64(int64(math.floor(acc + 0.5)))
            corr = C.mod_u64(v * qm, pj, pinv1, pinv2)
            r = uint32(r - corr) if r >= corr else uint32(r + pj - corr)
        out[m * uint32(Lout) * N32 + j * N32 + n] = r
        m = uint32(m + uint32(cuda.gridDim.z))


# t bound of _scale_round_to_t: a + a in _mulmod_2k and r + s % t below 2t must not wrap in
# uint64, and int64(t) must be positive. gpubfv.ring.rns.ScaleRoundToT sends only a prime
# t < 2^61 (Parameters' MAX_PLAIN_BITS) here; t >= 2^61 is wide (kernels.cuda.widet), and the
# launcher refuses t >= 2^63 from any other holder.
_SRT_MAX_T = 1 << 63


@cuda.jit(device=True, inline=True)
def _mulmod_2k(a, k, t):
    for _ in range(k):
        a = a + a
        if a >= t:
            a = a - t
    return a


@cuda.jit(cache=C.CACHE)
def _scale_round_to_t(x, omega, theta, t, out, m0, L, N):
    # out[m, n] = round(t * x / Q) mod t (see kernels.cpu.rns._scale_round_to_t), row
    # m = m0 + blockIdx.y (the launcher splits M over launches: no loop holds a remainder).
    # omega_i < t < 2^64 in three chunks (20 | 22 | 22 bits; leading zero chunks when t needs
    # fewer: Horner then starts from zero, the CPU's result), split once per block into shared
    # memory: three exact 64-bit sums over the limbs (x_i * chunk < 2^54, 256 limbs < 2^62),
    # walked with a 32-bit offset; the float64 rounding sum in the CPU's order without FMA.
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    L32 = uint32(L)
    # the per-limb constants in shared memory: theta_i, and the three chunks as one row of
    # four words (an 8-byte and a 4-byte load from one shared pointer per limb in the loop)
    th_s = cuda.shared.array(_SRT_MAX_LIMBS, dtype=float64)
    ch_s = cuda.shared.array((_SRT_MAX_LIMBS, 4), dtype=uint32, alignment=_SRT_ALIGN)
    i = uint32(cuda.threadIdx.x)
    while i < L32:
        w = uint64(omega[i])
        th_s[i] = theta[i]
        ch_s[i, 0] = uint32(w >> uint64(44))
        ch_s[i, 1] = uint32((w >> uint64(22)) & uint64(0x3FFFFF))
        ch_s[i, 2] = uint32(w & uint64(0x3FFFFF))
        i = uint32(i + uint32(cuda.blockDim.x))
    cuda.syncthreads()
    if n >= N32:
        return
    m = uint32(uint32(m0) + uint32(cuda.blockIdx.y))
    xo = uint32(m * L32 * N32 + n)
    s0 = uint64(0)
    s1 = uint64(0)
    s2 = uint64(0)
    frac = 0.0
    i = uint32(0)
    while i < L32:
        xv = uint32(x[xo])
        frac = C.fadd(frac, C.fmul(float64(xv), th_s[i]))
        s0 = C.madwide(xv, ch_s[i, 0], s0)
        s1 = C.madwide(xv, ch_s[i, 1], s1)
        s2 = C.madwide(xv, ch_s[i, 2], s2)
        xo = uint32(xo + N32)
        i = uint32(i + uint32(1))
    r = s0 % t
    r = (_mulmod_2k(r, 22, t) + s1 % t) % t
    r = (_mulmod_2k(r, 22, t) + s2 % t) % t
    rnd = int64(math.floor(frac + 0.5)) % int64(t)
    out[m * N32 + n] = (r + uint64(rnd)) % t


@cuda.jit(cache=C.CACHE)
def _hps_scale_to_r(xq, xr, rmod, int_t, frac_part, own, out, M, Lq, Lr, N):
    # out[m, k, n] = sum_i xq_i int_part[i,k] + xr_k own[k] + round(sum_i xq_i frac_part[i])
    # mod r_k. Grid (N / threads, Lr, min(M, 65535)): r_k per thread; one pass over the input
    # limbs adds the float64 rounding sum (the CPU's order, no FMA) and a lazy 64-bit sum
    # (int_t = int_part transposed), reduced every _LAZY - 1 products without division.
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if n >= N32:
        return
    k = uint32(cuda.blockIdx.y)
    Lq32 = uint32(Lq)
    rk = uint32(rmod[k])
    rinv2 = 1.0 / float64(rk)
    rinv1 = rinv2 if rk > uint32(1) else 0.0
    ok = uint64(own[k])
    m = uint32(cuda.blockIdx.z)
    while m < uint32(M):
        xo = uint32(m * Lq32 * N32 + n)
        s = uint64(C.mod_u64(uint64(xr[(m * uint32(Lr) + k) * N32 + n]) * ok, rk, rinv1, rinv2))
        f = 0.0
        i = uint32(0)
        while i < Lq32:
            stop = min(uint32(i + _LAZY - 1), Lq32)
            while i < stop:
                xv = uint32(xq[xo])
                f = C.fadd(f, C.fmul(float64(xv), frac_part[i]))
                s += uint64(xv) * uint64(int_t[k, i])
                xo = uint32(xo + N32)
                i = uint32(i + 1)
            s = uint64(C.mod_u64(s, rk, rinv1, rinv2))
        rnd = C.mod_u64(uint64(int64(math.floor(f + 0.5))), rk, rinv1, rinv2)
        r = uint32(uint32(s) + rnd)
        if r >= rk:
            r = uint32(r - rk)
        out[(m * uint32(Lr) + k) * N32 + n] = r
        m = uint32(m + uint32(cuda.gridDim.z))


@cuda.jit(cache=C.CACHE)
def _add_scaled_plain(m, t64, r64, rs, tinv, q, acc, M, L, N):
    # acc[mi, l, n] += round(Q * m[mi, n] / t) mod q_l (= -c * t^-1, c = [Q m]_t centered), as
    # kernels.cpu.rns: w = m * r_t mod t by the CPU's 64-bit Shoup formula (rs = floor(r_t *
    # 2^64 / t)), exact for t < 2^63 and identical to it beyond. Grid (N / threads,
    # min(M, 65535)): a thread forms -c once, as a sign and the two 32-bit words lo, hi of
    # |c| (< 2^63), and walks the L limbs of its coefficient: |c| t^-1 = lo w0 + hi w1 mod q_l
    # with w0 = [t^-1]_q, w1 = [2^32 t^-1]_q, two Shoup products whose estimates share one
    # multiply by -q (the sum is in [0, 4q), 4q < 2^32), two min corrections, the sign, the
    # accumulate. The limb's words (w0, its Shoup word, w1, its Shoup word | 2^32 - q,
    # 2^32 - 2q) are made once per block in shared memory: one 16- and one 8-byte load.
    tab_s = cuda.shared.array(_ASP_TAB, dtype=uint32, alignment=_ALIGN)
    L32 = uint32(L)
    i = uint32(cuda.threadIdx.x)
    while i < L32:
        ql = uint32(q[i])
        w0 = uint32(tinv[i])
        qi1, qi2 = C.inv_pair(ql)
        w1 = C.mod_u64(uint64(w0) << uint64(32), ql, qi1, qi2)
        k = uint32(i * uint32(8))
        tab_s[k] = w0
        tab_s[k + uint32(1)] = C.shoup_const(w0, ql)
        tab_s[k + uint32(2)] = w1
        tab_s[k + uint32(3)] = C.shoup_const(w1, ql)
        tab_s[k + uint32(4)] = uint32(uint64(0x100000000) - uint64(ql))
        tab_s[k + uint32(5)] = uint32(uint64(0x100000000) - uint64(ql) - uint64(ql))
        i = uint32(i + uint32(cuda.blockDim.x))
    cuda.syncthreads()
    n = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    N32 = uint32(N)
    if n >= N32:
        return
    half = t64 >> uint64(1)
    mi = uint32(cuda.blockIdx.y)
    while mi < uint32(M):
        v = uint64(m[mi * N32 + n])
        w = v * r64 - C.mulhi64(v, rs) * t64
        if w >= t64:
            w -= t64
        # -c = t - w when w > t/2 (c = w - t < 0), else -w: its sign and magnitude
        minus = not (w > half)
        mag = w if minus else uint64(t64 - w)
        lo = uint32(mag)
        hi = uint32(mag >> uint64(32))
        o = uint32(mi * L32 * N32 + n)
        k = uint32(0)
        stop = uint32(L32 * uint32(8))
        while k < stop:
            nq = tab_s[k + uint32(4)]
            e = uint32(C.mulhi32(lo, tab_s[k + uint32(1)]) + C.mulhi32(hi, tab_s[k + uint32(3)]))
            y = uint32(uint64(uint32(uint64(lo) * uint64(tab_s[k]))) +
                       uint64(uint32(uint64(hi) * uint64(tab_s[k + uint32(2)]))) +
                       uint64(uint32(uint64(e) * uint64(nq))))  # fmt: skip
            y = min(y, uint32(uint64(y) + uint64(tab_s[k + uint32(5)])))  # [0, 2q)
            y = min(y, uint32(uint64(y) + uint64(nq)))  # [0, q)
            if minus:  # q - y in (0, q]
                y = uint32(uint64(0x100000000) - uint64(nq) - uint64(y))
            s = uint32(uint64(y) + uint64(acc[o]))
            acc[o] = min(s, uint32(uint64(s) + uint64(nq)))
            o = uint32(o + N32)
            k = uint32(k + uint32(8))
        mi = uint32(mi + uint32(cuda.gridDim.y))


# ---------------------------------------------------------------- wrappers


def _u32(x: Any, name: str) -> None:
    C.check_data(x, name)
    if x.dtype != np.uint32 or not x.flags.c_contiguous or x.ndim != 3:
        raise TypeError(f"{name} must be a C-contiguous uint32 array (M, L, N)")


def base_convert(x, c, exact: bool, out) -> None:
    """x (M, Lin, N) -> out (M, Lout, N); `c` is a BaseConverter-like constants holder."""
    _u32(x, "x")
    _u32(out, "out")
    M, Lin, N = x.shape
    Lout = out.shape[1]
    if out.shape != (M, Lout, N):
        raise ValueError(f"output shape {out.shape} does not match input {x.shape}")
    if Lin > _BC_MAX_LIMBS:
        raise ValueError(f"base_convert supports at most {_BC_MAX_LIMBS} input limbs, got {Lin}")
    qin, invq, qout, qmod = C.consts(c, "qin", "inv_q", "qout", "q_mod")
    hi_pack = C.derived(c, "qhat_inv_shoup", _shoup_pack)
    qhat_t = C.derived(c, "qhat_mod_t", lambda h: np.ascontiguousarray(C.to_host(h.qhat_mod).T))
    A = C.arg
    if M == 0 or Lout == 0 or N == 0:
        return
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _base_convert, (gx, Lout, min(M, C.MAX_GRID_Y)), threads, A(x.reshape(x.size)), A(qin),
        A(hi_pack), A(invq), A(qout), A(qhat_t), A(qmod), bool(exact), A(out.reshape(out.size)),
        M, Lin, Lout, N,
    )  # fmt: skip


def _shoup_pack(c: Any) -> np.ndarray:
    # (Q/q_i)^-1 mod q_i | floor(it * 2^32 / q_i) << 32, computed exactly with Python integers
    w = [int(v) for v in C.to_host(c.qhat_inv).tolist()]
    q = [int(v) for v in C.to_host(c.qin).tolist()]
    return np.array([a | (((a << 32) // b) << 32) for a, b in zip(w, q, strict=True)], np.uint64)


def scale_round_to_t(x, c, out) -> None:
    """out (M, N) uint64 = round(t * x / Q) mod t for x (M, L, N) in basis Q."""
    _u32(x, "x")
    C.check_data(out, "out")
    M, L, N = x.shape
    if out.dtype != np.uint64 or out.shape != (M, N):
        raise TypeError(f"out must be uint64 with shape {(M, N)}")
    if not 2 <= int(c.t) < _SRT_MAX_T:
        raise ValueError(f"scale_round_to_t needs 2 <= t < 2^63, got {c.t} (a wide t = 2^k, k > 61,"
                         " goes to kernels.cuda.widet)")  # fmt: skip
    omega16, theta = C.consts(c, "omega16", "theta")
    ch = int(omega16.shape[0])
    if not 1 <= ch <= MAX_OMEGA_CHUNKS:
        raise ValueError(f"t needs {ch} 16-bit chunks; at most {MAX_OMEGA_CHUNKS} supported")
    if L > _SRT_MAX_LIMBS:
        raise ValueError(f"scale_round_to_t supports at most {_SRT_MAX_LIMBS} limbs, got {L}")
    omega = C.derived(c, "omega", _omega_join)
    if M == 0 or N == 0:
        return
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    xf, of = A(x.reshape(x.size)), A(out.reshape(out.size))
    for m0 in range(0, M, C.MAX_GRID_Y):
        rows = min(M - m0, C.MAX_GRID_Y)
        C.launch(
            _scale_round_to_t, (gx, rows), threads, xf, A(omega), A(theta), np.uint64(c.t), of,
            m0, L, N,
        )  # fmt: skip


def _omega_join(c: Any) -> np.ndarray:
    # omega_i from its 16-bit chunks (most significant first), one uint64 per input limb
    w = C.to_host(c.omega16).astype(object)
    ch = w.shape[0]
    return np.array([sum(int(w[k, i]) << (16 * (ch - 1 - k)) for k in range(ch))
                     for i in range(w.shape[1])], dtype=np.uint64)  # fmt: skip


def hps_scale_to_r(xq, xr, c, out) -> None:
    """The HPS scaling of a tensor product from basis Q*R to round(t * x / Q) in R."""
    _u32(xq, "xq")
    _u32(xr, "xr")
    _u32(out, "out")
    M, Lq, N = xq.shape
    Lr = xr.shape[1]
    if xr.shape != (M, Lr, N) or out.shape != xr.shape:
        raise ValueError(f"shape mismatch: xq {xq.shape}, xr {xr.shape}, out {out.shape}")
    rmod, frac_part, own = C.consts(c, "rmod", "frac_part", "own")
    int_t = C.derived(c, "int_part_t", lambda h: np.ascontiguousarray(C.to_host(h.int_part).T))
    if M == 0 or Lr == 0 or N == 0:
        return
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _hps_scale_to_r, (gx, Lr, min(M, C.MAX_GRID_Y)), threads, A(xq.reshape(xq.size)),
        A(xr.reshape(xr.size)), A(rmod), A(int_t), A(frac_part), A(own),
        A(out.reshape(out.size)), M, Lq, Lr, N,
    )  # fmt: skip


def add_scaled_plain(m, t: int, r_t: int, tinv, q, mu, acc) -> None:
    """acc += round(Q*m/t) in RNS, m uint64 (M, N) with entries in [0, t)."""
    C.check_data(m, "m")
    C.check_data(acc, "acc")
    if m.dtype != np.uint64 or acc.dtype != np.uint32 or not acc.flags.c_contiguous:
        raise TypeError("add_scaled_plain takes uint64 m and C-contiguous uint32 acc")
    M, L, N = acc.shape
    if m.shape != (M, N):
        raise ValueError(f"m shape {m.shape} does not match acc {acc.shape}")
    if M == 0 or L == 0 or N == 0:
        return
    if L > _ASP_MAX_LIMBS:
        raise ValueError(f"add_scaled_plain supports at most {_ASP_MAX_LIMBS} limbs, got {L}")
    rs = ((int(r_t) << 64) // int(t)) & 0xFFFFFFFFFFFFFFFF
    A = C.arg
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(
        _add_scaled_plain, (gx, min(M, C.MAX_GRID_Y)), threads,
        A(C.xp().ascontiguousarray(m).reshape(M * N)), np.uint64(t), np.uint64(r_t),
        np.uint64(rs), A(C.asdev(tinv, np.uint32)), A(C.asdev(q)), A(acc.reshape(acc.size)),
        M, L, N,
    )  # fmt: skip
