"""RNS basis conversion and scale-and-round kernels (HPS-style, floating-point corrections).

Conventions: x has shape (M, Lin, N), uint32 residues in [0, q_i). Constants are precomputed
by the caller with Python integers (see gpubfv.ring.rns) and passed as arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint32, uint64

from kernels.cpu.arith import _barrett


@njit(inline="always")
def _mulhi64(a, b):
    # high 64 bits of the 128-bit product a*b, from four 32x32->64 products
    m32 = uint64(0xFFFFFFFF)
    a0, a1 = a & m32, a >> uint64(32)
    b0, b1 = b & m32, b >> uint64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> uint64(32)) + (p01 & m32) + (p10 & m32)
    return p11 + (p01 >> uint64(32)) + (p10 >> uint64(32)) + (mid >> uint64(32))


@njit(inline="always")
def _reduce64(x, q, mu64):
    # x mod q for any x < 2^64, q < 2^32, mu64 = floor(2^64 / q): branch-free Barrett (the
    # quotient estimate is short by at most 2), vectorizes on 32x32->64 multiplies
    r = x - _mulhi64(x, mu64) * q
    if r >= q:
        r -= q
    if r >= q:
        r -= q
    return r


_LAZY = 14  # products of two 30-bit residues summed before one reduction: 14 * 2^60 < 2^64


def reduce64_constants(moduli) -> np.ndarray:
    """Per modulus, the constants that reduce a 64-bit sum of products without division."""
    return np.array([(1 << 64) // int(q) for q in np.asarray(moduli).tolist()], dtype=np.uint64)


@njit(parallel=True, cache=True, nogil=True)
def _base_convert(
    x, qin, qhat_inv, qhat_inv_mu, inv_q, qout, qout_mu64, qhat_mod, q_mod, exact, out
):
    # y_i = x_i * [(Q/q_i)^-1]_{q_i};  out_j = sum_i y_i [Q/q_i]_{p_j} - v [Q]_{p_j}
    M, Lin, N = x.shape
    Lout = qout.shape[0]
    for m in prange(M):
        y = np.empty((Lin, N), dtype=np.uint64)
        v = np.zeros(N, dtype=np.int64)
        for i in range(Lin):
            qi = uint64(qin[i])
            c = uint64(qhat_inv[i])
            mu = qhat_inv_mu[i]
            for n in range(N):
                y[i, n] = _barrett(uint64(x[m, i, n]) * c, qi, mu)  # same modulus
        if exact:
            acc = np.zeros(N, dtype=np.float64)
            for i in range(Lin):
                f = inv_q[i]
                for n in range(N):
                    acc[n] += np.float64(y[i, n]) * f
            for n in range(N):
                v[n] = np.int64(np.floor(acc[n] + 0.5))
        for j in range(Lout):
            pj = uint64(qout[j])
            mu = qout_mu64[j]
            s = np.zeros(N, dtype=np.uint64)
            for i in range(Lin):
                c = uint64(qhat_mod[i, j])
                for n in range(N):
                    s[n] += y[i, n] * c  # < 2^60 each: 14 fit before a reduction is due
                if i % _LAZY == _LAZY - 1 or i == Lin - 1:
                    for n in range(N):
                        s[n] = _reduce64(s[n], pj, mu)
            if exact:
                qm = uint64(q_mod[j])
                for n in range(N):
                    corr = _reduce64(uint64(v[n]) * qm, pj, mu)
                    r = s[n]
                    out[m, j, n] = uint32(r - corr if r >= corr else r + pj - corr)
            else:
                for n in range(N):
                    out[m, j, n] = uint32(s[n])


@njit(inline="always")
def _mulmod_2k(a, k, t):
    # a * 2^k mod t for a < t < 2^62, by doubling
    for _ in range(k):
        a = a + a
        if a >= t:
            a -= t
    return a


@njit(parallel=True, cache=True, nogil=True)
def _scale_round_to_t(x, omega16, theta, t, out):
    # out = round(t * x / Q) mod t. With x = sum_i x_i Qt_i (Q/q_i) - v Q:
    # t x / Q = sum_i x_i omega_i + sum_i x_i theta_i - v t, omega_i = floor(t Qt_i / q_i) mod t,
    # theta_i its fractional part. omega is split in 16-bit chunks (most significant first) so
    # that each chunk's sum over limbs is exact in 64 bits; chunks are joined by Horner mod t.
    M, L, N = x.shape
    C = omega16.shape[0]
    t64 = uint64(t)
    for m in prange(M):
        sums = np.zeros((C, N), dtype=np.uint64)
        frac = np.zeros(N, dtype=np.float64)
        for i in range(L):
            th = theta[i]
            for n in range(N):
                frac[n] += np.float64(x[m, i, n]) * th
            for c in range(C):
                w = uint64(omega16[c, i])
                for n in range(N):
                    sums[c, n] += uint64(x[m, i, n]) * w
        for n in range(N):
            r = sums[0, n] % t64
            for c in range(1, C):
                r = (_mulmod_2k(r, 16, t64) + sums[c, n] % t64) % t64
            rnd = np.int64(np.floor(frac[n] + 0.5)) % np.int64(t)
            out[m, n] = (r + uint64(rnd)) % t64


@njit(inline="always")
def _fred(s, t, inv_t):
    # s mod t for s < 2^53 (float quotient off by at most one, corrected)
    qt = uint64(np.float64(s) * inv_t)
    r = np.int64(s) - np.int64(qt * t)
    while r < 0:
        r += np.int64(t)
    while r >= np.int64(t):
        r -= np.int64(t)
    return uint64(r)


@njit(parallel=True, cache=True, nogil=True)
def _scale_round_small_t(x, omega16, theta, t, out):
    # _scale_round_to_t for t < 2^32 (at most two 16-bit chunks) and L < 64: every partial sum
    # stays below 2^53, so reductions use a float quotient instead of divisions; parallel over
    # blocks of coefficients, so a single ciphertext uses every core.
    M, L, N = x.shape
    C = omega16.shape[0]
    B = 512
    nb = (N + B - 1) // B
    t64 = uint64(t)
    inv_t = 1.0 / np.float64(t)
    for job in prange(M * nb):
        m = job // nb
        n0 = (job % nb) * B
        w = min(B, N - n0)
        s0 = np.zeros(B, dtype=np.uint64)
        s1 = np.zeros(B, dtype=np.uint64)
        fr = np.zeros(B, dtype=np.float64)
        for i in range(L):
            w0 = uint64(omega16[0, i])
            w1 = uint64(omega16[C - 1, i])
            th = theta[i]
            for j in range(w):
                xi = x[m, i, n0 + j]
                s0[j] += uint64(xi) * w0
                s1[j] += uint64(xi) * w1
                fr[j] += np.float64(xi) * th
        for j in range(w):
            r = _fred(s0[j], t64, inv_t)
            if C == 2:
                r = _fred((r << uint64(16)) + s1[j], t64, inv_t)
            rnd = _fred(uint64(np.int64(np.floor(fr[j] + 0.5))), t64, inv_t)
            r += rnd
            if r >= t64:
                r -= t64
            out[m, n0 + j] = r


@njit(parallel=True, cache=True, nogil=True)
def _hps_scale_to_r(xq, xr, qmod, rmod, rmu64, int_part, frac_part, own, out):
    # out_k = sum_i xq_i * int_part[i,k] + xr_k * own[k] + round(sum_i xq_i frac_part[i]) mod r_k
    # (loops over coefficients innermost: contiguous, branch-free, vectorizable)
    M, Lq, N = xq.shape
    Lr = rmod.shape[0]
    for m in prange(M):
        f = np.zeros(N, dtype=np.float64)
        for i in range(Lq):
            fi = frac_part[i]
            for n in range(N):
                f[n] += np.float64(xq[m, i, n]) * fi
        rnd = np.empty(N, dtype=np.uint64)
        for n in range(N):
            rnd[n] = uint64(np.int64(np.floor(f[n] + 0.5)))
        s = np.empty(N, dtype=np.uint64)
        for k in range(Lr):
            rk = uint64(rmod[k])
            mu = rmu64[k]
            ok = uint64(own[k])
            for n in range(N):
                s[n] = _reduce64(uint64(xr[m, k, n]) * ok + rnd[n], rk, mu)
            for i in range(Lq):
                c = uint64(int_part[i, k])
                for n in range(N):
                    s[n] += uint64(xq[m, i, n]) * c
                if i % _LAZY == _LAZY - 1 or i == Lq - 1:
                    for n in range(N):
                        s[n] = _reduce64(s[n], rk, mu)
            for n in range(N):
                out[m, k, n] = uint32(s[n])


def _mu64(c, field: str) -> np.ndarray:
    """floor(2^64 / q) for the constants holder's target moduli, memoised on the holder."""
    key = "_cpu_mu64_" + field
    cached = c.__dict__.get(key)
    if cached is None:
        cached = reduce64_constants(getattr(c, field))
        c.__dict__[key] = cached
    return cached


def base_convert(x, c, exact: bool, out) -> None:
    """x (M, Lin, N) -> out (M, Lout, N); `c` is a BaseConverter-like constants holder."""
    if x.dtype != np.uint32 or not x.flags.c_contiguous:
        raise TypeError("base_convert takes C-contiguous uint32")
    _base_convert(
        x,
        c.qin,
        c.qhat_inv,
        c.qhat_inv_mu,
        c.inv_q,
        c.qout,
        _mu64(c, "qout"),
        c.qhat_mod,
        c.q_mod,
        exact,
        out,
    )


def scale_round_to_t(x, c, out) -> None:
    """round(t * x / Q) mod t for every coefficient of an RNS polynomial (decryption)."""
    if x.dtype != np.uint32 or not x.flags.c_contiguous:
        raise TypeError("scale_round_to_t takes C-contiguous uint32")
    if c.t < (1 << 32) and x.shape[1] < 64:
        _scale_round_small_t(x, c.omega16, c.theta, c.t, out)
    else:
        _scale_round_to_t(x, c.omega16, c.theta, c.t, out)


def hps_scale_to_r(xq, xr, c, out) -> None:
    """The HPS scaling of a tensor product from basis Q*R to round(t * x / Q) in R."""
    if xq.dtype != np.uint32 or xr.dtype != np.uint32:
        raise TypeError("hps_scale_to_r takes uint32")
    _hps_scale_to_r(xq, xr, c.qmod, c.rmod, _mu64(c, "rmod"), c.int_part, c.frac_part, c.own, out)


@njit(parallel=True, cache=True, nogil=True)
def _add_scaled_plain(m, t, r_t, r_shoup, tinv, q, mu, acc):
    # acc (M, L, N) += round(Q * m / t) mod q_l, computed as -c * t^-1 with c = [Q m]_t centered
    M, L, N = acc.shape
    t64 = uint64(t)
    r64 = uint64(r_t)
    half = t64 >> uint64(1)
    small = t64 < (uint64(1) << uint64(32))
    for mi in prange(M):
        c = np.empty(N, dtype=np.int64)
        for n in range(N):
            v = m[mi, n]
            if small:
                w = (v * r64) % t64
            else:  # Shoup: v*r - floor(v*r'/2^64)*t, r' = floor(r*2^64/t), one correction
                w = v * r64 - _mulhi64(v, r_shoup) * t64
                if w >= t64:
                    w -= t64
            c[n] = np.int64(w) - np.int64(t64) if w > half else np.int64(w)
        for l in range(L):
            ql = uint64(q[l])
            qi = np.int64(ql)
            ti = uint64(tinv[l])
            mul = mu[l]
            for n in range(N):
                neg_c = (-c[n]) % qi
                if neg_c < 0:
                    neg_c += qi
                s = _barrett(uint64(neg_c) * ti, ql, mul) + uint64(acc[mi, l, n])
                acc[mi, l, n] = uint32(s - ql if s >= ql else s)


def add_scaled_plain(m, t: int, r_t: int, tinv, q, mu, acc) -> None:
    """acc += round(Q*m/t) in RNS, m uint64 (M, N) with entries in [0, t)."""
    if m.dtype != np.uint64 or acc.dtype != np.uint32 or not acc.flags.c_contiguous:
        raise TypeError("add_scaled_plain takes uint64 m and C-contiguous uint32 acc")
    r_shoup = ((int(r_t) << 64) // int(t)) & 0xFFFFFFFFFFFFFFFF
    _add_scaled_plain(m, t, r_t, np.uint64(r_shoup), tinv, q, mu, acc)
