"""Batched negacyclic NTT / INTT on the GPU (numba.cuda), bit-identical to ``kernels.cpu.ntt``.

Data: uint32 (M, L, N), C-contiguous, limb l reduced mod q_l < 2^30, transformed in place.
Forward: Cooley-Tukey (natural in, bit-reversed out); inverse: Gentleman-Sande (bit-reversed in,
natural out, scaled by N^-1). Output is fully reduced to [0, q), so it equals the CPU result
bit for bit (the lazy ranges in between do not matter: the reduced transform is unique).

Launch design. The log2(N) stages are split into G = ceil(log2 N / log2 TILE) groups of at most
log2(TILE) consecutive stages; each group is ONE launch over the whole batch:
  grid  = (N / TILE blocks per row, min(M*L, 65535) rows; grid-stride loop over further rows)
  block = `threads` threads (each loops over its share of the TILE/2 butterflies per stage).
A group covering the k stages with half-sizes t0 = t1*2^(k-1) .. t1 touches, for each column
(h, b) with h < N/(2 t0), b < t1, only the P = 2^k elements j = h*2*t0 + a*t1 + b (a < P):
an independent size-P sub-transform. A block loads C = TILE/P consecutive columns (P*C words,
coalesced in runs of min(C, t1) words) into shared memory, runs its k stages there with
__syncthreads between stages, and writes them back. N <= TILE: one launch, one pass over memory
(every stage in shared memory); N = 2^16 with TILE = 8192: two launches of 8 stages each.
Butterflies are Harvey lazy ones with Shoup twiddles, 32x32->64-bit products (uint64 in numba,
the compiler emits mul.wide/mul.hi); the last forward stage / the N^-1 scaling of the inverse are
fused with the final reduction to [0, q).
"""

from __future__ import annotations

from typing import Any

from numba import cuda, uint32, uint64

from kernels.cuda import _common as C
from kernels.ntt_tables import NTTTables

__all__ = ["ntt_forward", "ntt_inverse", "TILE_MAX"]

TILE_MAX = 8192  # words of shared memory per block (32 KiB, under the 48 KiB static limit)
DEFAULT_THREADS = 32 if C.SIM else 512


@cuda.jit(device=True, inline=True)
def _mulshoup(y, w, wp, q):
    # y < 2^32, w < q, wp = floor(w 2^32 / q): returns w*y mod q in [0, 2q). No wraparound:
    # hi <= w*y/q so w*y - hi*q >= 0 exactly.
    hi = (wp * y) >> uint64(32)
    return w * y - hi * q


@cuda.jit
def _fwd_group(a, R, L, N, q, w, ws, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tid = cuda.threadIdx.x
    nth = cuda.blockDim.x
    ccount = 1 << logC
    T = ccount << k
    t1 = 1 << logt1
    t0 = t1 << (k - 1)
    c0 = cuda.blockIdx.x * ccount
    for row in range(cuda.blockIdx.y, R, cuda.gridDim.y):
        l = row % L
        qq = uint64(q[l])
        two_q = qq + qq
        for e in range(tid, T, nth):
            aa = e >> logC
            c = c0 + (e & (ccount - 1))
            j = (c >> logt1) * 2 * t0 + aa * t1 + (c & (t1 - 1))
            sh[e] = a[row, j]
        cuda.syncthreads()
        for s in range(k - 1, -1, -1):
            half = 1 << s
            t = t1 << s
            m = N // (2 * t)
            for u in range(tid, T >> 1, nth):
                cc = u & (ccount - 1)
                p = u >> logC
                alo = ((p >> s) << (s + 1)) + (p & (half - 1))
                h = (c0 + cc) >> logt1
                i = (h << (k - 1 - s)) + (alo >> (s + 1))
                W = uint64(w[l, m + i])
                Wp = uint64(ws[l, m + i])
                jx = (alo << logC) + cc
                jy = jx + (half << logC)
                x = uint64(sh[jx])
                y = uint64(sh[jy])
                if x >= two_q:
                    x = x - two_q
                tt = _mulshoup(y, W, Wp, qq)
                sh[jx] = uint32(x + tt)
                sh[jy] = uint32(x + two_q - tt)
            cuda.syncthreads()
        for e in range(tid, T, nth):
            aa = e >> logC
            c = c0 + (e & (ccount - 1))
            j = (c >> logt1) * 2 * t0 + aa * t1 + (c & (t1 - 1))
            v = uint64(sh[e])
            if last:
                if v >= two_q:
                    v = v - two_q
                if v >= qq:
                    v = v - qq
            a[row, j] = uint32(v)
        cuda.syncthreads()


@cuda.jit
def _inv_group(a, R, L, N, q, wi, wis, ninv, ninvs, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tid = cuda.threadIdx.x
    nth = cuda.blockDim.x
    ccount = 1 << logC
    T = ccount << k
    t1 = 1 << logt1
    t0 = t1 << (k - 1)
    c0 = cuda.blockIdx.x * ccount
    for row in range(cuda.blockIdx.y, R, cuda.gridDim.y):
        l = row % L
        qq = uint64(q[l])
        two_q = qq + qq
        for e in range(tid, T, nth):
            aa = e >> logC
            c = c0 + (e & (ccount - 1))
            j = (c >> logt1) * 2 * t0 + aa * t1 + (c & (t1 - 1))
            sh[e] = a[row, j]
        cuda.syncthreads()
        for s in range(k):
            half = 1 << s
            t = t1 << s
            m = N // (2 * t)
            for u in range(tid, T >> 1, nth):
                cc = u & (ccount - 1)
                p = u >> logC
                alo = ((p >> s) << (s + 1)) + (p & (half - 1))
                h = (c0 + cc) >> logt1
                i = (h << (k - 1 - s)) + (alo >> (s + 1))
                W = uint64(wi[l, m + i])
                Wp = uint64(wis[l, m + i])
                jx = (alo << logC) + cc
                jy = jx + (half << logC)
                x = uint64(sh[jx])
                y = uint64(sh[jy])
                sm = x + y
                if sm >= two_q:
                    sm = sm - two_q
                d = x + two_q - y
                sh[jx] = uint32(sm)
                sh[jy] = uint32(_mulshoup(d, W, Wp, qq))
            cuda.syncthreads()
        ni = uint64(ninv[l])
        nis = uint64(ninvs[l])
        for e in range(tid, T, nth):
            aa = e >> logC
            c = c0 + (e & (ccount - 1))
            j = (c >> logt1) * 2 * t0 + aa * t1 + (c & (t1 - 1))
            v = uint64(sh[e])
            if last:
                v = _mulshoup(v, ni, nis, qq)
                if v >= qq:
                    v = v - qq
            a[row, j] = uint32(v)
        cuda.syncthreads()


def _plan(log_n: int, tile: int) -> list[int]:
    """Stage counts per launch (forward order: largest strides first), as even as possible."""
    kmax = tile.bit_length() - 1
    ng = max(1, -(-log_n // kmax))
    base, extra = divmod(log_n, ng)
    return [base + (1 if g < extra else 0) for g in range(ng)]


def _check(a: Any, tables: NTTTables) -> int:
    if not isinstance(tables, NTTTables):
        raise TypeError("tables must be an NTTTables")
    C.check_data(a, "a")
    if a.dtype != "uint32":
        raise TypeError(f"a must be uint32, got {a.dtype}")
    L = len(tables.moduli)
    if a.ndim != 3 or a.shape[1] != L or a.shape[2] != tables.n:
        raise ValueError(f"a must have shape (M, {L}, {tables.n}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError("a must be C-contiguous")
    if C.SIM and not a.flags.writeable:
        raise ValueError("a must be writeable")
    return a.shape[0] * L


def _run(a: Any, tables: NTTTables, inverse: bool, tile: int, threads: int) -> None:
    R = _check(a, tables)
    if R == 0:
        return
    n = tables.n
    log_n = tables.log_n
    if tile < 2 or tile & (tile - 1) or tile > TILE_MAX:
        raise ValueError(f"tile must be a power of two in [2, {TILE_MAX}]")
    tile = min(tile, n)
    L = len(tables.moduli)
    a2 = C.arg(a.reshape(R, n))
    groups = _plan(log_n, tile)
    gy = min(R, C.MAX_GRID_Y)
    if not inverse:
        q, w, ws = (C.arg(x) for x in C.consts(tables, "q", "w", "w_shoup"))
        done = 0  # stages done so far
        for g, k in enumerate(groups):
            done += k
            logt1 = log_n - done
            logc = (tile.bit_length() - 1) - k
            nthr = max(1, min(threads, tile // 2))
            C.launch(
                _fwd_group,
                (n // tile, gy),
                nthr,
                a2,
                R,
                L,
                n,
                q,
                w,
                ws,
                logt1,
                k,
                logc,
                g == len(groups) - 1,
            )
    else:
        q, wi, wis, ni, nis = (
            C.arg(x) for x in C.consts(tables, "q", "wi", "wi_shoup", "n_inv", "n_inv_shoup")
        )
        logt1 = 0
        rev = groups[::-1]
        for g, k in enumerate(rev):
            logc = (tile.bit_length() - 1) - k
            nthr = max(1, min(threads, tile // 2))
            C.launch(
                _inv_group,
                (n // tile, gy),
                nthr,
                a2,
                R,
                L,
                n,
                q,
                wi,
                wis,
                ni,
                nis,
                logt1,
                k,
                logc,
                g == len(rev) - 1,
            )
            logt1 += k


def ntt_forward(
    a: Any,
    tables: NTTTables,
    parallel: bool | None = None,
    *,
    tile: int = TILE_MAX,
    threads: int = 0,
) -> None:
    """In-place forward negacyclic NTT of a (M, L, N) uint32 device array (bit-reversed out).

    `parallel` is accepted for signature parity with ``kernels.cpu`` and ignored. `tile` (words
    of shared memory per block, a power of two) and `threads` (per block) are tuning knobs;
    every choice gives the same result.
    """
    _run(a, tables, False, tile, threads or DEFAULT_THREADS)


def ntt_inverse(
    a: Any,
    tables: NTTTables,
    parallel: bool | None = None,
    *,
    tile: int = TILE_MAX,
    threads: int = 0,
) -> None:
    """In-place inverse of :func:`ntt_forward` (bit-reversed in, natural order out, [0, q))."""
    _run(a, tables, True, tile, threads or DEFAULT_THREADS)
