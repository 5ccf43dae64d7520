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
__syncthreads between stages, and writes them back. N <= TILE: one launch, one pass over memory;
N = 8192 with TILE = 2048: two launches (7 + 6 stages) of 4 blocks per row, so B*L = 64 rows
give 256 blocks, enough for every SM of an H100/H200 (one block per row would leave half idle).
Before its stages a block copies the twiddles it needs (a contiguous run per stage, packed with
their Shoup companions as one 64-bit word) into shared memory, so the butterfly loop reads only
shared memory. Index arithmetic is 32-bit: a butterfly u = (ps, low) sits at u with a zero bit
inserted at log2(distance), no division anywhere. Butterflies are Harvey lazy ones with Shoup
twiddles on 32-bit words (w*y - hi*q is exact mod 2^32); the last forward stage / the N^-1
scaling of the inverse are fused with the final reduction to [0, q).
"""

from __future__ import annotations

from typing import Any

from numba import cuda, uint32, uint64

from kernels.cuda import _common as C
from kernels.ntt_tables import NTTTables

__all__ = ["ntt_forward", "ntt_inverse", "TILE_MAX"]

TILE_MAX = 2048  # data words per block: 8 KiB, plus 16 KiB of staged (twiddle, Shoup) pairs
DEFAULT_THREADS = 32 if C.SIM else 512

_U1 = uint32(1)
_LO = uint64(0xFFFFFFFF)


@cuda.jit(device=True, inline=True)
def _mulshoup(y, w, wp, q):
    # y < 2^32, w < q, wp = floor(w 2^32 / q): w*y mod q in [0, 2q). The exact value w*y - hi*q
    # lies in [0, 2q) with q < 2^30, so it equals the difference taken mod 2^32 (32-bit math).
    hi = uint32((uint64(wp) * uint64(y)) >> uint64(32))
    return uint32((uint64(w) * uint64(y) - uint64(hi) * uint64(q)) & _LO)


@cuda.jit(device=True, inline=True)
def _wrapsub(x, y):
    # x - y mod 2^32 without an intermediate underflow (numpy scalars warn on one in the
    # simulator); compiles to one 32-bit subtract. min(x, x - y) then reduces x < 2y to [0, y).
    return uint32((uint64(x) + uint64(0x100000000) - uint64(y)) & _LO)


@cuda.jit(device=True, inline=True)
def _geometry(logt1, k, logC):
    # 32-bit launch constants: log sizes, the block's first column, its first twiddle group h0
    lt1 = uint32(logt1)
    kk = uint32(k)
    lc = uint32(logC)
    c0 = uint32(cuda.blockIdx.x) << lc
    return lt1, kk, lc, c0, c0 >> lt1


@cuda.jit(device=True, inline=True)
def _col_index(e, lt1, kk, lc, c0):
    # shared slot e = a*C + c_local -> word j = h*2*t0 + a*t1 + b of the row (c = h*t1 + b)
    c = c0 + (e & ((_U1 << lc) - _U1))
    return ((c >> lt1) << (lt1 + kk)) | ((e >> lc) << lt1) | (c & ((_U1 << lt1) - _U1))


@cuda.jit(device=True, inline=True)
def _stage_twiddles(tw, wrow, wsrow, N, lt1, kk, lc, h0, tid, nth):
    # Stage s (half-size t1*2^s) of this block uses the 2^(k-1-s) twiddles of each of its nh
    # groups h: global w[m_s + (h << (k-1-s)) + r], m_s = N / (2 t1 2^s), a contiguous run.
    # Stored at tw[nh*(2^(k-1-s) - 1) + (h-h0)*2^(k-1-s) + r]: stages back to back, < 2^k*nh;
    # each entry packs the twiddle (low word) with its Shoup companion (high): one 64-bit load.
    nh = max(_U1, (_U1 << lc) >> lt1)
    for s in range(kk):
        ks = kk - _U1 - uint32(s)
        cnt = nh << ks
        off = nh * ((_U1 << ks) - _U1)
        g0 = (uint32(N) >> (lt1 + uint32(s) + _U1)) + (h0 << ks)
        v = tid
        while v < cnt:
            tw[off + v] = uint64(wrow[g0 + v]) | (uint64(wsrow[g0 + v]) << uint64(32))
            v = uint32(v + nth)


@cuda.jit
def _fwd_group(a, R, L, N, q, w, ws, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tw = cuda.shared.array(TILE_MAX, dtype=uint64)
    tid = uint32(cuda.threadIdx.x)
    nth = uint32(cuda.blockDim.x)
    lt1, kk, lc, c0, h0 = _geometry(logt1, k, logC)
    nh = uint32(max(_U1, (_U1 << lc) >> lt1))  # twiddle groups h per block
    T = uint32(_U1 << (lc + kk))
    half_t = uint32(T >> _U1)
    # column bits of a butterfly index that select its twiddle group (c >> lt1 within block)
    gmask = uint32(((_U1 << lc) - _U1) & ~((_U1 << lt1) - _U1))
    for row in range(cuda.blockIdx.y, R, cuda.gridDim.y):
        l = uint32(row) % uint32(L)
        arow = a[row]
        qq = uint32(q[l])
        two_q = uint32(qq + qq)
        _stage_twiddles(tw, w[l], ws[l], N, lt1, kk, lc, h0, tid, nth)
        e = tid
        while e < T:
            sh[e] = arow[_col_index(e, lt1, kk, lc, c0)]
            e = uint32(e + nth)
        cuda.syncthreads()
        for si in range(kk):
            s = uint32(kk - _U1 - uint32(si))
            ks = uint32(kk - _U1 - s)
            off = uint32(nh * ((_U1 << ks) - _U1))
            hb = uint32(s + lc)
            hoff = uint32(_U1 << hb)
            hhi = uint32(~(hoff - _U1))
            u = tid
            while u < half_t:
                # u = ps*hoff + low (low < hoff): the pair is jx = u with a zero bit inserted
                # at log2(hoff), jy = jx + hoff; twiddle group (cc >> lt1), index ps
                ps = uint32(u >> hb)
                jx = uint32(u + (u & hhi))
                jy = uint32(jx + hoff)
                ti = uint32(off + (((u & gmask) >> lt1) << ks) + ps)
                x = sh[jx]
                y = sh[jy]
                x = min(x, _wrapsub(x, two_q))  # x < 4q -> [0, 2q)
                wv = tw[ti]
                tt = _mulshoup(y, uint32(wv & _LO), uint32(wv >> uint64(32)), qq)
                sh[jx] = uint32(x + tt)
                sh[jy] = uint32(x + two_q - tt)
                u = uint32(u + nth)
            cuda.syncthreads()
        e = tid
        while e < T:
            v = sh[e]
            if last:
                if v >= two_q:
                    v = uint32(v - two_q)
                if v >= qq:
                    v = uint32(v - qq)
            arow[_col_index(e, lt1, kk, lc, c0)] = v
            e = uint32(e + nth)
        cuda.syncthreads()


@cuda.jit
def _inv_group(a, R, L, N, q, wi, wis, ninv, ninvs, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tw = cuda.shared.array(TILE_MAX, dtype=uint64)
    tid = uint32(cuda.threadIdx.x)
    nth = uint32(cuda.blockDim.x)
    lt1, kk, lc, c0, h0 = _geometry(logt1, k, logC)
    nh = uint32(max(_U1, (_U1 << lc) >> lt1))  # twiddle groups h per block
    T = uint32(_U1 << (lc + kk))
    half_t = uint32(T >> _U1)
    # column bits of a butterfly index that select its twiddle group (c >> lt1 within block)
    gmask = uint32(((_U1 << lc) - _U1) & ~((_U1 << lt1) - _U1))
    for row in range(cuda.blockIdx.y, R, cuda.gridDim.y):
        l = uint32(row) % uint32(L)
        arow = a[row]
        qq = uint32(q[l])
        two_q = uint32(qq + qq)
        _stage_twiddles(tw, wi[l], wis[l], N, lt1, kk, lc, h0, tid, nth)
        e = tid
        while e < T:
            sh[e] = arow[_col_index(e, lt1, kk, lc, c0)]
            e = uint32(e + nth)
        cuda.syncthreads()
        for si in range(kk):
            s = uint32(si)
            ks = uint32(kk - _U1 - s)
            off = uint32(nh * ((_U1 << ks) - _U1))
            hb = uint32(s + lc)
            hoff = uint32(_U1 << hb)
            hhi = uint32(~(hoff - _U1))
            u = tid
            while u < half_t:
                # u = ps*hoff + low (low < hoff): the pair is jx = u with a zero bit inserted
                # at log2(hoff), jy = jx + hoff; twiddle group (cc >> lt1), index ps
                ps = uint32(u >> hb)
                jx = uint32(u + (u & hhi))
                jy = uint32(jx + hoff)
                ti = uint32(off + (((u & gmask) >> lt1) << ks) + ps)
                x = sh[jx]
                y = sh[jy]
                sm = uint32(x + y)
                sh[jx] = min(sm, _wrapsub(sm, two_q))
                wv = tw[ti]
                sh[jy] = _mulshoup(
                    uint32(x + two_q - y), uint32(wv & _LO), uint32(wv >> uint64(32)), qq
                )
                u = uint32(u + nth)
            cuda.syncthreads()
        ni = uint32(ninv[l])
        nis = uint32(ninvs[l])
        e = tid
        while e < T:
            v = sh[e]
            if last:
                v = _mulshoup(v, ni, nis, qq)
                if v >= qq:
                    v = uint32(v - qq)
            arow[_col_index(e, lt1, kk, lc, c0)] = v
            e = uint32(e + nth)
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
