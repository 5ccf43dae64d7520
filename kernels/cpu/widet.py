"""Wide plaintext modulus t = 2^k (62 <= k <= 256): the two kernels that touch t (numba).

A wide plaintext coefficient is W = ceil(k/32) little-endian 32-bit words (word 0 least
significant), array shape (M, W, N) uint32; bits at and above k are ignored on input and zero
on output. Constants come from gpubfv.ring.rns (`ScaleRoundToT`, `WidePlainScaling`), computed
there with Python integers; the derivations and error bounds are in those docstrings.

- `wide_scale_round`: round(2^k * x / Q) mod 2^k for x in basis Q (decryption).
- `wide_add_scaled_plain`: acc += round(Q * m / 2^k) in basis Q (encryption, add_plain).
- `wide_pack` / `wide_unpack`: sub-values v_j (sub-slot j of coefficient i at index j*N + i)
  <-> coefficients sum_j v_j 2^(j*width) in words (CoefficientEncoder with pack > 1).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint32, uint64

from kernels.cpu.arith import _barrett, barrett_constants
from kernels.cpu.rns import _reduce64, reduce64_constants

__all__ = ["wide_scale_round", "wide_add_scaled_plain", "wide_pack", "wide_unpack"]

_BLOCK = 512  # coefficients per parallel job: one ciphertext still uses every core
_M32 = 0xFFFFFFFF


@njit(parallel=True, cache=True, nogil=True)
def _wide_scale_round(x, omega, theta, top_mask, out):
    # out = sum_i x_i omega_i + round(sum_i x_i theta_i) mod 2^k, omega_i in W words. Word by
    # word with a running carry: each product x_i * omega_{i,w} < 2^62 is split into its low
    # word (added to this word's sum) and its high word (< 2^30, carried into the next word),
    # so both sums stay below L * 2^32 + carry < 2^64 for any L < 2^30. The float64 sum runs
    # over i in order, like the CUDA kernel (no FMA), so both round identically.
    M, L, N = x.shape
    W = omega.shape[0]
    nb = (N + _BLOCK - 1) // _BLOCK
    m32 = uint64(_M32)
    for job in prange(M * nb):
        m = job // nb
        n0 = (job % nb) * _BLOCK
        B = min(_BLOCK, N - n0)
        fr = np.zeros(B, dtype=np.float64)
        for i in range(L):
            th = theta[i]
            for j in range(B):
                fr[j] += np.float64(x[m, i, n0 + j]) * th
        carry = np.empty(B, dtype=np.uint64)
        for j in range(B):
            carry[j] = uint64(np.int64(np.floor(fr[j] + 0.5)))
        lo = np.empty(B, dtype=np.uint64)
        hi = np.empty(B, dtype=np.uint64)
        for w in range(W):
            for j in range(B):
                lo[j] = carry[j]
                hi[j] = 0
            for i in range(L):
                om = uint64(omega[w, i])
                for j in range(B):
                    p = uint64(x[m, i, n0 + j]) * om
                    lo[j] += p & m32
                    hi[j] += p >> uint64(32)
            mask = uint64(top_mask) if w == W - 1 else m32
            for j in range(B):
                out[m, w, n0 + j] = uint32(lo[j] & mask)
                carry[j] = (lo[j] >> uint64(32)) + hi[j]


def wide_scale_round(x, c, out) -> None:
    """out (M, W, N) uint32 = round(2^k * x / Q) mod 2^k for x (M, L, N) in basis Q.

    `c` is a `gpubfv.ring.rns.ScaleRoundToT` built for a wide t (fields omega32, theta,
    top_mask)."""
    if x.dtype != np.uint32 or not x.flags.c_contiguous or x.ndim != 3:
        raise TypeError("wide_scale_round takes C-contiguous uint32 x (M, L, N)")
    M, L, N = x.shape
    W = c.omega32.shape[0]
    if out.dtype != np.uint32 or out.shape != (M, W, N) or not out.flags.c_contiguous:
        raise TypeError(f"out must be C-contiguous uint32 with shape {(M, W, N)}")
    _wide_scale_round(x, c.omega32, c.theta, np.uint32(c.top_mask), out)


@njit(parallel=True, cache=True, nogil=True)
def _wide_add_scaled_plain(m, rt, top_mask, hbit, tmod, pw, tinv, q, bmu_packed, mu64, acc):
    # acc (M, L, N) += round(Q m / 2^k) mod q_l = -c * (2^k)^-1 mod q_l, c = [Q m]_{2^k}
    # centered in (-2^(k-1), 2^(k-1)]. w = (Q mod 2^k) * m mod 2^k is a truncated multi-word
    # product (column sums split into low/high words as in _wide_scale_round); then w mod q_l
    # by Horner-free word sums sum_j w_j [2^(32 j)]_{q_l}, one reduction per word;
    # -c = -w when w <= 2^(k-1), else 2^k - w.
    M, L, N = acc.shape
    W = rt.shape[0]
    nb = (N + _BLOCK - 1) // _BLOCK
    m32 = uint64(_M32)
    for job in prange(M * nb):
        mi = job // nb
        n0 = (job % nb) * _BLOCK
        B = min(_BLOCK, N - n0)
        words = np.empty((W, B), dtype=np.uint64)
        carry = np.zeros(B, dtype=np.uint64)
        low_nz = np.zeros(B, dtype=np.uint64)
        half = np.zeros(B, dtype=np.uint64)
        lo = np.empty(B, dtype=np.uint64)
        hi = np.empty(B, dtype=np.uint64)
        for w in range(W):
            for j in range(B):
                lo[j] = carry[j]
                hi[j] = 0
            for a in range(w + 1):
                r = uint64(rt[w - a])
                for j in range(B):
                    p = uint64(m[mi, a, n0 + j]) * r
                    lo[j] += p & m32
                    hi[j] += p >> uint64(32)
            top = w == W - 1
            mask = uint64(top_mask) if top else m32
            for j in range(B):
                v = lo[j] & mask
                words[w, j] = v
                carry[j] = (lo[j] >> uint64(32)) + hi[j]
                if top:
                    half[j] = (v >> uint64(hbit)) & uint64(1)
                    low_nz[j] |= v & ((uint64(1) << uint64(hbit)) - uint64(1))
                else:
                    low_nz[j] |= v
        big = np.empty(B, dtype=np.uint64)  # w > 2^(k-1): -c = 2^k - w, else -c = -w
        for j in range(B):
            big[j] = half[j] if low_nz[j] != 0 else uint64(0)
        s = np.empty(B, dtype=np.uint64)
        for l in range(L):
            ql = uint64(q[l])
            mu = mu64[l]
            tm = uint64(tmod[l])
            ti = uint64(tinv[l])
            bmu = bmu_packed[l]
            # w mod q_l = sum_j w_j [2^(32 j)]_{q_l}: products < 2^62, four fit before a reduction
            for j in range(B):
                s[j] = 0
            for w in range(W):
                c = uint64(pw[l, w])
                for j in range(B):
                    s[j] += words[w, j] * c
                if w % 4 == 3 or w == W - 1:
                    for j in range(B):
                        s[j] = _reduce64(s[j], ql, mu)
            for j in range(B):  # -c = big * 2^k - w (mod q_l): no branch, vectorizes
                neg_c = big[j] * tm + ql - s[j]  # < 2 q_l
                neg_c = neg_c - ql if neg_c >= ql else neg_c
                s[j] = _barrett(neg_c * ti, ql, bmu)
            row = acc[mi, l, n0 : n0 + B]
            for j in range(B):
                v = s[j] + uint64(row[j])
                row[j] = uint32(v - ql if v >= ql else v)


def wide_add_scaled_plain(m, c, acc) -> None:
    """acc (M, L, N) += round(Q * m / 2^k) in RNS, m (M, W, N) uint32 words of m mod 2^k.

    `c` is a `gpubfv.ring.rns.WidePlainScaling` (fields rt, top_mask, hbit, tmod, pw, tinv,
    q)."""
    if m.dtype != np.uint32 or acc.dtype != np.uint32 or not acc.flags.c_contiguous:
        raise TypeError("wide_add_scaled_plain takes uint32 m and C-contiguous uint32 acc")
    M, L, N = acc.shape
    if m.shape != (M, c.rt.shape[0], N):
        raise ValueError(f"m shape {m.shape} does not match acc {acc.shape}")
    consts = c.__dict__.get("_cpu_reduce")
    if consts is None:  # memoised on the holder: (Barrett words, floor(2^64 / q_l))
        consts = c.__dict__["_cpu_reduce"] = (barrett_constants(c.q), reduce64_constants(c.q))
    _wide_add_scaled_plain(
        np.ascontiguousarray(m), c.rt, np.uint32(c.top_mask), np.int64(c.hbit), c.tmod, c.pw,
        c.tinv, c.q, consts[0], consts[1], acc,
    )  # fmt: skip


@njit(parallel=True, cache=True, nogil=True)
def _wide_pack(v, pack, width, out):
    # out = sum_j v[j*N + i] 2^(j*width) in words (entries past `count` are 0): sub-value j
    # at bit offset j*width = 32a + sh lands in words a, a+1 (the low 64 bits of v << sh) and,
    # when width + sh > 64, a+2 (v >> (64 - sh)). Sub-values do not overlap, so OR is a sum.
    M, count = v.shape
    W, N = out.shape[1], out.shape[2]
    nb = (N + _BLOCK - 1) // _BLOCK
    m32 = uint64(_M32)
    for job in prange(M * nb):
        m = job // nb
        n0 = (job % nb) * _BLOCK
        B = min(_BLOCK, N - n0)
        for a in range(W):
            for jj in range(B):
                out[m, a, n0 + jj] = 0
        for j in range(pack):
            start = j * N + n0
            valid = min(B, count - start)
            if valid <= 0:
                break
            off = j * width
            a = off >> 5
            sh = uint64(off & 31)
            two = a + 1 < W
            three = sh > 0 and width + sh > 64 and a + 2 < W
            for jj in range(valid):
                val = uint64(v[m, start + jj])
                lo = val << sh
                out[m, a, n0 + jj] |= uint32(lo & m32)
                if two:
                    out[m, a + 1, n0 + jj] |= uint32(lo >> uint64(32))
                if three:
                    out[m, a + 2, n0 + jj] |= uint32(val >> (uint64(64) - sh))


def wide_pack(v, pack: int, width: int, out) -> None:
    """out (M, W, N) uint32 words of sum_j v[:, j*N + i] 2^(j*width); v (M, count) int64 in
    [0, 2^width), count <= pack*N, width <= 63, pack*width <= 32*W (checked by the caller)."""
    if v.dtype != np.int64 or v.ndim != 2 or not v.flags.c_contiguous:
        raise TypeError("wide_pack takes C-contiguous int64 v (M, count)")
    if out.dtype != np.uint32 or out.ndim != 3 or not out.flags.c_contiguous:
        raise TypeError("wide_pack writes C-contiguous uint32 out (M, W, N)")
    if out.shape[0] != v.shape[0] or v.shape[1] > pack * out.shape[2] or not 1 <= width <= 63:
        raise ValueError(f"wide_pack: v {v.shape} does not fit out {out.shape} at pack {pack}")
    _wide_pack(v, np.int64(pack), np.int64(width), out)


@njit(parallel=True, cache=True, nogil=True)
def _wide_unpack(words, pack, width, out):
    # out[m, j*N + i] = bits [j*width, (j+1)*width) of coefficient i (up to three words)
    M, W, N = words.shape
    mask = (uint64(1) << uint64(width)) - uint64(1)
    nb = (N + _BLOCK - 1) // _BLOCK
    for job in prange(M * nb):
        m = job // nb
        n0 = (job % nb) * _BLOCK
        B = min(_BLOCK, N - n0)
        for j in range(pack):
            off = j * width
            a = off >> 5
            sh = off & 31
            for jj in range(B):
                i = n0 + jj
                lo = uint64(words[m, a, i])
                if a + 1 < W:
                    lo |= uint64(words[m, a + 1, i]) << uint64(32)
                val = lo >> uint64(sh)
                if sh > 0 and sh + width > 64 and a + 2 < W:
                    val |= uint64(words[m, a + 2, i]) << uint64(64 - sh)
                out[m, j * N + i] = np.int64(val & mask)


def wide_unpack(words, pack: int, width: int, out) -> None:
    """out (M, pack*N) int64: sub-value j of coefficient i at j*N + i, from words (M, W, N)."""
    if words.dtype != np.uint32 or words.ndim != 3 or not words.flags.c_contiguous:
        raise TypeError("wide_unpack takes C-contiguous uint32 words (M, W, N)")
    M, W, N = words.shape
    if out.dtype != np.int64 or out.shape != (M, pack * N) or not out.flags.c_contiguous:
        raise TypeError(f"wide_unpack writes C-contiguous int64 out {(M, pack * N)}")
    if not 1 <= width <= 63 or pack * width > 32 * W:
        raise ValueError(f"{pack} sub-values of {width} bits do not fit {W} words")
    _wide_unpack(words, np.int64(pack), np.int64(width), out)
