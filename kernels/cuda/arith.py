"""Element-wise modular arithmetic on RNS device arrays (M, L, N), bit-identical to
``kernels.cpu.arith``.

Launch design: a 2-D grid, x over the N coefficients (ELEMWISE_THREADS threads per block, bounds
checked), y over the M*L rows (capped at 65535, grid-stride loop beyond); one thread per
output word, so global loads and stores are coalesced. Second operands may have M == 1
(broadcast). Barrett reduction exactly as the CPU (packed constants from
kernels.cpu.arith.barrett_constants: mu = floor(2^(2k) / q), k = bitlen(q) in bits 56..63).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, float64, int32, int64, uint32, uint64

from kernels.cuda import _common as C

_U32 = np.dtype(np.uint32)


# The element-wise kernels take flat (M*L*N,) views on a 3-D grid (N / threads, L,
# min(M, 65535)): the limb is blockIdx.y, so its modulus and constants are per-block (no
# row % L), and a thread walks its batch rows with one 32-bit word offset (the launcher checks
# M*L*N < 2^32): an address is one wide multiply-add per operand, reductions on 32-bit words.


@cuda.jit(device=True, inline=True)
def _flat(M, L, N):
    # (first offset, offset step, end, per-limb offset of a broadcast row, limb, in range)
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    l = uint32(cuda.blockIdx.y)
    n = uint32(N)
    ln = uint32(uint32(L) * n)
    off = uint32(uint32(cuda.blockIdx.z) * ln + l * n + i)
    step = uint32(uint32(cuda.gridDim.z) * ln)
    end = uint32(uint32(M) * ln)
    return off, step, end, uint32(l * n + i), l, i < n


@cuda.jit(device=True, inline=True)
def _bsteps(off, step, boff, bm):
    # second operand: its own offsets, or the broadcast row (step 0) when it has M == 1
    if bm > 1:
        return off, step
    return boff, uint32(0)


@cuda.jit(device=True, inline=True)
def _lower(s, q):
    # s < 2q -> s mod q as min(s, s - q mod 2^32): one instruction (the wrapped difference is
    # huge when s < q); the 64-bit form keeps the simulator free of uint32 underflow warnings
    return min(s, uint32((uint64(s) + uint64(0x100000000) - uint64(q)) & uint64(0xFFFFFFFF)))


@cuda.jit(cache=C.CACHE)
def _add(a, b, q, out, M, L, N, bm):
    off, step, end, boff, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    boff, bstep = _bsteps(off, step, boff, bm)
    while off < end:
        out[off] = _lower(uint32(uint32(a[off]) + uint32(b[boff])), ql)
        off = uint32(off + step)
        boff = uint32(boff + bstep)


@cuda.jit(cache=C.CACHE)
def _sub(a, b, q, out, M, L, N, bm):
    off, step, end, boff, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    boff, bstep = _bsteps(off, step, boff, bm)
    while off < end:
        out[off] = _lower(uint32(uint32(a[off]) + ql - uint32(b[boff])), ql)
        off = uint32(off + step)
        boff = uint32(boff + bstep)


@cuda.jit(cache=C.CACHE)
def _neg(a, q, out, M, L, N):
    off, step, end, _, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    while off < end:
        out[off] = _lower(uint32(ql - uint32(a[off])), ql)
        off = uint32(off + step)


@cuda.jit(cache=C.CACHE)
def _mul(a, b, q, mu, out, M, L, N, bm):
    off, step, end, boff, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    mul, k = C.unpack_mu(uint64(mu[l]))
    boff, bstep = _bsteps(off, step, boff, bm)
    while off < end:
        x = uint64(a[off]) * uint64(b[boff])
        out[off] = C.barrett32(x, ql, mul, k)
        off = uint32(off + step)
        boff = uint32(boff + bstep)


@cuda.jit(cache=C.CACHE)
def _mul_add(a, b, q, mu, acc, M, L, N, bm):
    off, step, end, boff, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    mul, k = C.unpack_mu(uint64(mu[l]))
    boff, bstep = _bsteps(off, step, boff, bm)
    while off < end:
        # a*b + acc < q^2 + q < 2^(2k): within the Barrett range
        x = uint64(a[off]) * uint64(b[boff]) + uint64(acc[off])
        acc[off] = C.barrett32(x, ql, mul, k)
        off = uint32(off + step)
        boff = uint32(boff + bstep)


@cuda.jit(cache=C.CACHE)
def _mul_scalar(a, s, q, mu, out, M, L, N):
    off, step, end, _, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    mul, k = C.unpack_mu(uint64(mu[l]))
    sl = uint64(s[l])
    while off < end:
        out[off] = C.barrett32(uint64(a[off]) * sl, ql, mul, k)
        off = uint32(off + step)


@cuda.jit(cache=C.CACHE)
def _sum_batch(a, q, out, K, M, L, N):
    # a: flat (K*M*L*N,) -> out (M*L*N,) on the flat 3-D grid, one pass over the K inputs:
    # input k of this output word sits k*M*L*N words further (the launcher checks the size)
    off, step, end, _, l, ok = _flat(M, L, N)
    if not ok:
        return
    ql = uint32(q[l])
    kstep = end
    kend = uint32(uint32(K) * kstep)
    while off < end:
        s = uint32(0)
        src = off
        while src < kend:
            s = _lower(uint32(s + uint32(a[src])), ql)
            src = uint32(src + kstep)
        out[off] = s
        off = uint32(off + step)


@cuda.jit(cache=C.CACHE)
def _from_signed(x, q, out, M, L, N):
    # x int64 (M*N,) -> out (M*L*N,) on the flat 3-D grid: floor-mod x % q (in [0, q)) with no
    # integer division. A float64 quotient estimate of x / q is off by at most 2^12 / q + 1, so
    # r1 = x - e*q has |r1| < 2^12 + q < 2^31 (exact in 32 bits); a second estimate of r1 / q
    # is off by < 2^-40 while r1 / q is an integer or >= 1/q from one, so r1 - e2*q is in
    # [0, 2q). Exact, hence identical to the CPU. q = 1: the first estimate could reach 2^63
    # (out of int64), so it is skipped (r1 = low word of x) and the second one gives 0.
    off, step, end, _, l, ok = _flat(M, L, N)
    if not ok:
        return
    n = uint32(N)
    xoff = uint32(uint32(cuda.blockIdx.z) * n + cuda.blockIdx.x * cuda.blockDim.x)
    xoff = uint32(xoff + cuda.threadIdx.x)
    xstep = uint32(uint32(cuda.gridDim.z) * n)
    ql = int64(q[l])
    qinv2 = 1.0 / float64(ql)
    qinv1 = qinv2 if ql > 1 else 0.0
    q32 = int32(ql)
    while off < end:
        v = x[xoff]
        e = int64(math.floor(float64(v) * qinv1))
        r1 = int32(v - e * ql)  # may wrap in int64 near the extremes: the low word is exact
        e2 = int32(math.floor(float64(r1) * qinv2))
        r = int32(r1 - e2 * q32)
        if r >= q32:
            r = int32(r - q32)
        out[off] = uint32(r)
        off = uint32(off + step)
        xoff = uint32(xoff + xstep)


@cuda.jit(cache=C.CACHE)
def _automorphism(a, idx, negm, q, out, M, L, N):
    # flat 3-D grid: a thread keeps one source coefficient i, so its destination idx[i] and
    # sign are loaded once and reused for every batch row (a row offset advances by a step)
    off, step, end, _, l, ok = _flat(M, L, N)
    if not ok:
        return
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    dst = uint32(uint32(off - i) + uint32(idx[i]))
    neg = negm[i] != 0
    ql = uint32(q[l])
    while off < end:
        x = uint32(a[off])
        if neg and x != uint32(0):
            x = uint32(ql - x)
        out[dst] = x
        off = uint32(off + step)
        dst = uint32(dst + step)


@cuda.jit(cache=C.CACHE)
def _drop_last_limb(a, q, mu, ql_mod, ql_inv, out, M, L, N):
    # out (M*(L-1)*N,): (a_l - [a_last]_centered) * q_last^-1 mod q_l, as kernels.cpu.arith.
    # Grid (N / threads, L-1, min(M, 65535)): the limb's constants are per-thread registers,
    # three 32-bit word offsets advance per batch row; all reductions on 32-bit words.
    i = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    n = uint32(N)
    if i >= n:
        return
    l = uint32(cuda.blockIdx.y)
    L32 = uint32(L)
    Lo = uint32(L32 - uint32(1))
    m = uint32(cuda.blockIdx.z)
    mstep = uint32(cuda.gridDim.z)
    ain = uint32((m * L32 + l) * n + i)
    alast = uint32((m * L32 + Lo) * n + i)
    aout = uint32((m * Lo + l) * n + i)
    istep = uint32(mstep * L32 * n)
    ostep = uint32(mstep * Lo * n)
    end = uint32(uint32(M) * Lo * n)
    half = uint32(q[Lo]) >> uint32(1)
    qi = uint32(q[l])
    k = uint32(uint64(mu[l]) >> uint64(56))
    # u = x - r (+ q_last mod q_i when r is centered to r - q_last) + a multiple of q_i in
    # [2^30, 2^31) (so u >= 0: r < q_last < 2^30), u < 2^32; then one Shoup multiply by
    # q_last^-1 (any 32-bit u): the result is the CPU's.
    kq = uint32(qi << (uint32(31) - k))
    qlm = uint32(ql_mod[l])
    iv = uint32(ql_inv[l])
    ivs = C.shoup_const(iv, qi)
    while aout < end:
        r = uint32(a[alast])
        u = uint32(uint32(a[ain]) + kq - r)
        if r > half:
            u = uint32(u + qlm)
        out[aout] = C.shoup_mul(u, iv, ivs, qi)
        ain = uint32(ain + istep)
        alast = uint32(alast + istep)
        aout = uint32(aout + ostep)


# ---------------------------------------------------------------- wrappers


def _check(*arrays: Any) -> None:
    for a in arrays:
        C.check_data(a, "operand")
        if a.dtype != _U32 or not a.flags.c_contiguous or a.ndim != 3:
            raise TypeError("kernel operands must be C-contiguous uint32 arrays (M, L, N)")


def _check_pair(a: Any, b: Any) -> None:
    _check(a, b)
    if b.shape[1:] != a.shape[1:] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")


def _check_out(a: Any, out: Any) -> None:
    _check(out)
    if out.shape != a.shape:
        raise ValueError(f"output shape {out.shape} != operand shape {a.shape}")


def _launch3(kernel: Any, M: int, L: int, N: int, *args: Any) -> None:
    """Grid (N / threads, L, min(M, 65535)): limb = blockIdx.y, batch row = grid-stride in z."""
    if M == 0 or L == 0 or N == 0:
        return
    (gx, _), threads = C.grid_rows_cols(1, N)
    C.launch(kernel, (gx, L, min(M, C.MAX_GRID_Y)), threads, *args)


def add(a, b, q, out):
    """out = (a + b) mod q per limb; `b` may broadcast over the leading batch axis."""
    _check_pair(a, b)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(_add, M, L, N, A(F(a)), A(F(b)), A(C.asdev(q)), A(F(out)), M, L, N, b.shape[0])


def sub(a, b, q, out):
    """out = (a - b) mod q per limb; `b` may broadcast over the leading batch axis."""
    _check_pair(a, b)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(_sub, M, L, N, A(F(a)), A(F(b)), A(C.asdev(q)), A(F(out)), M, L, N, b.shape[0])


def neg(a, q, out):
    """out = (-a) mod q per limb."""
    _check(a)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(_neg, M, L, N, A(F(a)), A(C.asdev(q)), A(F(out)), M, L, N)


def _flat_view(a: Any) -> Any:
    if a.size >= 1 << 32:
        raise ValueError(f"operand of {a.size} words: the flat kernels index with 32 bits")
    return a.reshape(a.size)


def mul(a, b, q, mu, out):
    """out = a * b mod q per limb (Barrett with the packed constants `mu`)."""
    _check_pair(a, b)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(
        _mul, M, L, N, A(F(a)), A(F(b)), A(C.asdev(q)), A(C.asdev(mu)), A(F(out)), M, L, N,
        b.shape[0],
    )  # fmt: skip


def mul_add(a, b, q, mu, acc):
    """acc = (acc + a * b) mod q per limb, in place."""
    _check_pair(a, b)
    _check_out(a, acc)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(
        _mul_add, M, L, N, A(F(a)), A(F(b)), A(C.asdev(q)), A(C.asdev(mu)), A(F(acc)), M, L, N,
        b.shape[0],
    )  # fmt: skip


def mul_scalar(a, s, q, mu, out):
    """out = a * s_i mod q_i, one scalar per limb."""
    _check(a)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(
        _mul_scalar, M, L, N, A(F(a)), A(C.asdev(s, np.uint32)), A(C.asdev(q)), A(C.asdev(mu)),
        A(F(out)), M, L, N,
    )  # fmt: skip


def sum_batch(a, q, out):
    """out = the sum over the leading axis of a (K, M, L, N) batch, mod q per limb."""
    C.check_data(a, "a")
    if a.dtype != _U32 or a.ndim != 4 or not a.flags.c_contiguous:
        raise TypeError("sum_batch takes a C-contiguous uint32 array (K, M, L, N)")
    K, M, L, N = a.shape
    _check(out)
    if out.shape != (M, L, N):
        raise ValueError(f"output shape {out.shape} != {(M, L, N)}")
    if K == 0:
        raise ValueError("sum_batch needs K >= 1")
    A, F = C.arg, _flat_view
    _launch3(_sum_batch, M, L, N, A(F(a)), A(C.asdev(q)), A(F(out)), K, M, L, N)


def from_signed(x, q, out):
    """Signed int64 coefficients (M, N) to residues (M, L, N) mod every q_i."""
    C.check_data(x, "x")
    if x.dtype != np.int64 or x.ndim != 2:
        raise TypeError("from_signed takes int64 (M, N)")
    _check(out)
    M, L, N = out.shape
    if x.shape != (M, N):
        raise ValueError(f"x shape {x.shape} does not match output {out.shape}")
    A = C.arg
    xf = C.xp().ascontiguousarray(x).reshape(M * N)
    _launch3(
        _from_signed, M, L, N, A(xf), A(C.asdev(q)), A(_flat_view(out)), M, L, N,
    )  # fmt: skip


def automorphism(a, idx, neg_mask, q, out):
    """X -> X^g on coefficients: out[idx[j]] = +-a[j] (sign from `neg_mask`), mod q."""
    _check(a)
    _check_out(a, out)
    M, L, N = a.shape
    A, F = C.arg, _flat_view
    _launch3(
        _automorphism, M, L, N, A(F(a)), A(C.asdev(idx, np.int64)),
        A(C.asdev(neg_mask, np.uint8)), A(C.asdev(q)), A(F(out)), M, L, N,
    )  # fmt: skip


def drop_last_limb(a, q, mu, ql_mod, ql_inv, out):
    """Divide-and-round by the last prime q_L: the residues of round(x / q_L) at L-1 limbs."""
    _check(a, out)
    M, L, N = a.shape
    if out.shape != (M, L - 1, N):
        raise ValueError(f"output shape {out.shape} does not drop one limb of {a.shape}")
    A = C.arg
    _launch3(
        _drop_last_limb, M, L - 1, N, A(_flat_view(a)), A(C.asdev(q)), A(C.asdev(mu)),
        A(C.asdev(ql_mod)), A(C.asdev(ql_inv)), A(_flat_view(out)), M, L, N,
    )  # fmt: skip
