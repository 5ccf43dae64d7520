"""Exact discrete Gaussian N_Z(0, s) on the GPU, bit-identical to ``kernels.cpu.dgauss``.

The same algorithm (CKS 2020, every decision an integer comparison; see ``kernels.cpu.dgauss``
for the steps and the integer ranges) and the same layout: ``lanes(count)`` lanes, lane l reads
the keystream of (key, nonce) from block counter l * 2^20 on, one word at a time in order, and
writes samples l, l + P, ... Here ONE THREAD PER LANE: the thread keeps its current 64-byte
block in a local array (``kernels.cuda.prng``'s ChaCha20 block function) and the tables in
global memory. A rejection sampler's work per lane is a random walk, so the threads of a warp
diverge; the lane count (<= 4096) bounds the parallelism, which is plenty for the DP noise of
one update (a few hundred thousand samples per call at most).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda, float64, int64, uint32, uint64

from kernels.cpu.dgauss import _INV_E as _INV_E_TABLE
from kernels.cpu.dgauss import (
    LANE_BLOCKS,
    check_args,
    check_lanes,
    check_variance,
    dgauss_tables,
    gauss_params,
    raise_on,
)
from kernels.cuda import _common as C
from kernels.cuda.prng import _block, _key_nonce

__all__ = ["sample_discrete_gaussian"]

_KMAX = 64
_M32 = np.uint64(0xFFFFFFFF)


# st (uint64, local): [0] next word of ks (0..16), [1] blocks used, [2] first block, [3] error
@cuda.jit(device=True, inline=True)
def _word(kn, ks, st):
    p = st[0]
    if p == uint64(16):
        if st[1] == uint64(LANE_BLOCKS):
            st[3] = uint64(2)  # the lane's counter range is spent; its output is not used
            st[1] = uint64(0)
        _block(kn, st[2] + st[1], ks)
        st[1] = st[1] + uint64(1)
        p = uint64(0)
    st[0] = p + uint64(1)
    return uint64(ks[p])


@cuda.jit(device=True)
def _bern(kn, ks, st, n, c, lim, wide):
    # the CPU's lazy 64-bit comparison: the low word only when the high one does not decide
    cut = n * c
    while True:
        x = _word(kn, ks, st)
        decided = False
        if wide:
            hi_cut = cut >> uint64(32)
            hi_lim = lim >> uint64(32)
            if x < hi_cut:
                return True
            if x <= hi_lim:
                if x < hi_lim and x > hi_cut:
                    return False
                x = (x << uint64(32)) | _word(kn, ks, st)
                decided = x < lim
        else:
            decided = x < lim
        if decided:
            return x < cut


@cuda.jit(device=True, inline=True)
def _divmod_est(num, den):
    # floor(num / den) and the remainder without the 64-bit division routine (once per
    # candidate): a float64 estimate, then exact integer corrections. num < 2^62 and
    # den <= 2^56 (the tables' bound), so q * den < 2^63 and the int64 remainder cannot wrap;
    # quotients here are small (gamma = num / den, or 2^32 / k), so the estimate is off by at
    # most one.
    q = uint64(float64(num) / float64(den))
    r = int64(num) - int64(q) * int64(den)
    while r < int64(0):
        q -= uint64(1)
        r += int64(den)
    while r >= int64(den):
        q += uint64(1)
        r -= int64(den)
    return q, uint64(r)


@cuda.jit(device=True)
def _bern_inv_k(kn, ks, st, k):
    c, _ = _divmod_est(uint64(1) << uint64(32), k)  # k >= 13: reached with probability < 1/12!
    return _bern(kn, ks, st, uint64(1), c, c * k, False)


@cuda.jit(device=True)
def _bexp_unit(kn, ks, st, n, tab):
    k = 1
    while True:
        if k <= _KMAX:
            a = _bern(kn, ks, st, n, tab[0, k], tab[1, k], tab[2, k] != uint64(0))
        else:
            a = _bern(kn, ks, st, n, tab[0, 1], tab[1, 1], tab[2, 1] != uint64(0))
            if a:
                a = _bern_inv_k(kn, ks, st, uint64(k))
        if not a:
            return (k & 1) == 1
        k += 1


@cuda.jit(device=True)
def _bern_inv_e(kn, ks, st, inv_e):
    lim = inv_e[1]
    x = _word(kn, ks, st)
    while x >= lim:
        x = _word(kn, ks, st)
    k = 2
    while k < 13 and x < inv_e[k + 1]:
        k += 1
    if k == 13:
        while _bern_inv_k(kn, ks, st, uint64(k)):
            k += 1
    return (k & 1) == 1


@cuda.jit(device=True)
def _laplace(kn, ks, st, t, thr, tab_t, inv_e):
    tu = uint64(t)
    while True:
        m = _word(kn, ks, st) * tu
        while (m & _M32) < thr:
            m = _word(kn, ks, st) * tu
        u = m >> uint64(32)
        if _bexp_unit(kn, ks, st, u, tab_t):
            v = int64(0)
            while _bern_inv_e(kn, ks, st, inv_e):
                v += int64(1)
                if v > int64(1 << 31):
                    st[3] = uint64(1)
                    v = int64(0)
            x = int64(u) + t * v
            neg = (_word(kn, ks, st) & uint64(1)) == uint64(1)
            if not (neg and x == int64(0)):
                if neg:
                    return -x
                return x


@cuda.jit(device=True)
def _gauss(kn, ks, st, s, t, thr, tab_t, tab_d, den, qlb, inv_e):
    while True:
        y = _laplace(kn, ks, st, t, thr, tab_t, inv_e)
        ay = y if y >= int64(0) else -y
        a = ay * t - s
        if a < int64(0):
            a = -a
        if a >= int64(1 << 31):
            i = int64(0)
            while i < qlb and _bern_inv_e(kn, ks, st, inv_e):
                i += int64(1)
            if i == qlb:
                st[3] = uint64(1)
        else:
            num = uint64(a * a)
            q, r = _divmod_est(num, den)
            i = uint64(0)
            while i < q and _bern_inv_e(kn, ks, st, inv_e):
                i += uint64(1)
            if i == q and _bexp_unit(kn, ks, st, r, tab_d):
                return y


@cuda.jit(cache=C.CACHE)
def _dgauss_kernel(kn, tab_t, tab_d, inv_e, s, t, thr, den, qlb, lanes, out, err, count):
    lane = cuda.grid(1)
    if lane >= lanes:
        return
    ks = cuda.local.array(16, dtype=uint32)
    st = cuda.local.array(4, dtype=uint64)
    st[0] = uint64(16)
    st[1] = uint64(0)
    st[2] = uint64(lane) * uint64(LANE_BLOCKS)
    st[3] = uint64(0)
    i = lane
    while i < count:
        out[i] = _gauss(kn, ks, st, s, t, thr, tab_t, tab_d, den, qlb, inv_e)
        i += lanes
    err[lane] = int64(st[3])


def sample_discrete_gaussian(
    key: Any, nonce: Any, variance: int, count: int, lanes: int | None = None
) -> Any:
    """``count`` exact samples of N_Z(0, variance), an int64 device array, equal bit for bit to
    ``kernels.cpu.dgauss.sample_discrete_gaussian(key, nonce, variance, count, lanes)``."""
    key, nonce, count = check_args(key, nonce, count)
    s = check_variance(variance)
    t, thr, den, qlb = gauss_params(s)
    lanes = check_lanes(lanes, count)
    out = C.xp().empty(count, dtype=np.int64)
    if not count:
        return out
    err = C.xp().zeros(lanes, dtype=np.int64)
    grid, threads = C.grid_1d(lanes)
    C.launch(
        _dgauss_kernel, grid, threads, _key_nonce(key, nonce),
        C.arg(C.const_dev(dgauss_tables(t))), C.arg(C.const_dev(dgauss_tables(den))),
        C.arg(C.const_dev(_INV_E_TABLE)), np.int64(s), np.int64(t), np.uint64(thr),
        np.uint64(den), np.int64(qlb), np.int64(lanes), C.arg(out), C.arg(err), np.int64(count),
    )  # fmt: skip
    raise_on(C.to_host(err))
    return out
