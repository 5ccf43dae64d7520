"""Batched negacyclic NTT / INTT on the GPU (numba.cuda), bit-identical to ``kernels.cpu.ntt``.

Data: uint32 (M, L, N), C-contiguous, limb l reduced mod q_l < 2^30, transformed in place.
Forward: Cooley-Tukey (natural in, bit-reversed out); inverse: Gentleman-Sande (bit-reversed in,
natural out, scaled by N^-1). Output is fully reduced to [0, q), so it equals the CPU result
bit for bit (the lazy ranges in between do not matter: the reduced transform is unique).

Launch design. The log2(N) stages are split into G = ceil(log2 N / log2 TILE) groups of at most
log2(TILE) consecutive stages; each group is ONE launch over the whole batch:
  grid  = (N / TILE blocks per row, min(M*L, 65535) rows; grid-stride loop over further rows)
  block = `threads` threads, rounded up to a multiple of the block's column count C (below).
A group covering the k stages with half-sizes t0 = t1*2^(k-1) .. t1 touches, for each column
(h, b) with h < N/(2 t0), b < t1, only the P = 2^k elements j = h*2*t0 + a*t1 + b (a < P):
an independent size-P sub-transform. A block loads C = TILE/P consecutive columns (P*C words,
coalesced in runs of min(C, t1) words) into shared memory, runs its k stages there, and writes
them back. N <= TILE: one launch, one pass over memory; N = 8192 with TILE = 2048: two launches
(7 + 6 stages) of 4 blocks per row, so B*L = 64 rows give 256 blocks, enough for every SM of an
H100/H200 (one block per row would leave half idle).
Before its stages a block copies the twiddles it needs (a contiguous run per stage, packed with
their Shoup companions as one 64-bit word) into shared memory, laid out so that the two
twiddles of a stage below one at index i sit at 2i and 2i+1. Stages run in pairs (radix 4): a
thread loads four words, does two stages' four butterflies in registers and stores four words,
one __syncthreads per pair; an odd stage count adds one radix-2 stage (the group's stage whose
partner slot is e + TILE/2). Because the thread count is a multiple of C, a thread keeps one
column: its row offset and twiddle group are loop-invariant, and index arithmetic is 32-bit
shifts and adds, no division anywhere. Butterflies are Harvey lazy ones with Shoup twiddles on
32-bit words (one high-half multiply, then w*y + hi*(2^32 - q) mod 2^32); the final reduction
to [0, q) (forward) and the N^-1 scaling (inverse) are fused with the last write-back.
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
def _mulshoup(y, w, wp, nq):
    # y < 2^32, w < q, wp = floor(w 2^32 / q), nq = 2^32 - q: w*y mod q in [0, 2q). The exact
    # value w*y - hi*q lies in [0, 2q) with q < 2^30, so it equals w*y + hi*nq taken mod 2^32:
    # one high-half multiply and two 32-bit multiply-adds.
    hi = C.mulhi32(wp, y)
    return uint32((((uint64(w) * uint64(y)) & _LO) + ((uint64(hi) * uint64(nq)) & _LO)) & _LO)


@cuda.jit(device=True, inline=True)
def _wrapsub(x, y):
    # x - y mod 2^32 without an intermediate underflow (numpy scalars warn on one in the
    # simulator); compiles to one 32-bit subtract. min(x, x - y) then reduces x < 2y to [0, y).
    return uint32((uint64(x) + uint64(0x100000000) - uint64(y)) & _LO)


@cuda.jit(device=True, inline=True)
def _ct(x, y, wv, q2, nq):
    # Harvey's lazy Cooley-Tukey butterfly, x, y < 4q -> (x + w y, x - w y) in [0, 4q)
    x = min(x, _wrapsub(x, q2))
    t = _mulshoup(y, uint32(wv & _LO), uint32(wv >> uint64(32)), nq)
    return uint32(x + t), uint32(x + q2 - t)


@cuda.jit(device=True, inline=True)
def _gs(x, y, wv, q2, nq):
    # Gentleman-Sande butterfly, x, y < 2q -> (x + y, (x - y) w) in [0, 2q)
    s = uint32(x + y)
    return min(s, _wrapsub(s, q2)), _mulshoup(
        uint32(x + q2 - y), uint32(wv & _LO), uint32(wv >> uint64(32)), nq
    )


@cuda.jit(device=True, inline=True)
def _geometry(logt1, k, logC):
    # 32-bit launch constants: log sizes, the block's first column, its first twiddle group h0
    lt1 = uint32(logt1)
    kk = uint32(k)
    lc = uint32(logC)
    c0 = uint32(cuda.blockIdx.x) << lc
    return lt1, kk, lc, c0, c0 >> lt1


@cuda.jit(device=True, inline=True)
def _thread_column(tid, lt1, kk, lc, c0):
    # The thread's column c_local = tid mod C (the same for every slot e = tid + i*nth, since
    # the launcher makes nth a multiple of C): its row word j0 = h*2*t0 + b (c = h*t1 + b, the
    # slot a = 0) and twiddle group offset nh + h - h0. numba widens 32-bit integer arithmetic
    # to 64 bits unless every step is cast back.
    cl = uint32(tid & uint32(uint32(_U1 << lc) - _U1))
    c = uint32(c0 + cl)
    hi = uint32(uint32(c >> lt1) << uint32(lt1 + kk))
    j0 = uint32(hi | uint32(c & uint32(uint32(_U1 << lt1) - _U1)))
    nh = uint32(max(_U1, (_U1 << lc) >> lt1))  # twiddle groups h per block
    return j0, uint32(nh + uint32(cl >> lt1)), nh


@cuda.jit(device=True, inline=True)
def _word(e, j0, lt1, lc):
    # shared slot e = a*C + c_local -> its word j0 + a*t1 of the row
    return uint32(j0 + uint32(uint32(e >> lc) << lt1))


@cuda.jit(device=True, inline=True)
def _stage_twiddles(tw, wrow, wsrow, N, lt1, kk, nh, h0, tid, nth):
    # The stage with ks = k-1-s (half-size t1*2^s) uses the 2^ks twiddles of each of the
    # block's nh groups h: global w[m_s + (h << ks) + r], m_s = N / (2 t1 2^s), a contiguous
    # run, stored at tw[((nh + h - h0) << ks) + r] (stages back to back, all < nh*2^k <= TILE).
    # Then the two twiddles of the next-lower stage of a radix-4 unit whose upper stage uses
    # tw[i] are tw[2i] and tw[2i+1]. Each entry packs the twiddle (low word) with its Shoup
    # companion (high word): one 64-bit shared load.
    for s in range(kk):
        ks = uint32(kk - _U1 - uint32(s))
        cnt = uint32(nh << ks)
        g0 = uint32((uint32(N) >> (lt1 + uint32(s) + _U1)) + (h0 << ks))
        v = tid
        while v < cnt:
            tw[cnt + v] = uint64(wrow[g0 + v]) | (uint64(wsrow[g0 + v]) << uint64(32))
            v = uint32(v + nth)


@cuda.jit(device=True, inline=True)
def _radix2(sh, wv, fwd, half_t, tid, nth, two_q, nq):
    # stage k-1 of a group: slots e and e + T/2, the thread's one twiddle wv (ks = 0)
    e = tid
    if fwd:
        while e < half_t:
            f = uint32(e + half_t)
            x, y = _ct(sh[e], sh[f], wv, two_q, nq)
            sh[e] = x
            sh[f] = y
            e = uint32(e + nth)
    else:
        while e < half_t:
            f = uint32(e + half_t)
            x, y = _gs(sh[e], sh[f], wv, two_q, nq)
            sh[e] = x
            sh[f] = y
            e = uint32(e + nth)


@cuda.jit(device=True, inline=True)
def _radix4(sh, tw, fwd, hb, tg, quarter, tid, nth, two_q, nq):
    # Two adjacent stages with the values in registers: unit v holds the four slots with the
    # a-bits at log2 distances hb (d) and hb+1 (2d) set or clear (two zero bits inserted into v
    # at hb). The upper stage's twiddle is tw[ti], ti = (group << ks) + (a >> upper bit), the
    # lower stage's are tw[2 ti] and tw[2 ti + 1] (the layout of _stage_twiddles); tg is the
    # thread's group << ks. Forward: upper stage first (CT), inverse: lower first (GS).
    d = uint32(_U1 << hb)
    low = uint32(d - _U1)
    v = tid
    while v < quarter:
        e0 = uint32(v + uint32(uint32(3) * uint32(v & ~low)))
        e1 = uint32(e0 + d)
        e2 = uint32(e1 + d)
        e3 = uint32(e2 + d)
        ti = uint32(tg + uint32(v >> hb))
        t2 = uint32(ti + ti)
        if fwd:
            x0, x2 = _ct(sh[e0], sh[e2], tw[ti], two_q, nq)
            x1, x3 = _ct(sh[e1], sh[e3], tw[ti], two_q, nq)
            x0, x1 = _ct(x0, x1, tw[t2], two_q, nq)
            x2, x3 = _ct(x2, x3, tw[uint32(t2 + _U1)], two_q, nq)
        else:
            x0, x1 = _gs(sh[e0], sh[e1], tw[t2], two_q, nq)
            x2, x3 = _gs(sh[e2], sh[e3], tw[uint32(t2 + _U1)], two_q, nq)
            x0, x2 = _gs(x0, x2, tw[ti], two_q, nq)
            x1, x3 = _gs(x1, x3, tw[ti], two_q, nq)
        sh[e0] = x0
        sh[e1] = x1
        sh[e2] = x2
        sh[e3] = x3
        v = uint32(v + nth)


@cuda.jit(cache=C.CACHE)
def _fwd_group(a, R, L, N, q, w, ws, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tw = cuda.shared.array(TILE_MAX, dtype=uint64)
    tid = uint32(cuda.threadIdx.x)
    nth = uint32(cuda.blockDim.x)
    lt1, kk, lc, c0, h0 = _geometry(logt1, k, logC)
    j0, gsel, nh = _thread_column(tid, lt1, kk, lc, c0)
    T = uint32(_U1 << (lc + kk))
    half_t = uint32(T >> _U1)
    quarter = uint32(T >> uint32(2))
    odd = uint32(kk & _U1)
    row = uint32(cuda.blockIdx.y)
    while row < uint32(R):
        l = row % uint32(L)
        arow = a[row]
        qq = uint32(q[l])
        two_q = uint32(qq + qq)
        nq = uint32(uint64(0x100000000) - uint64(qq))
        _stage_twiddles(tw, w[l], ws[l], N, lt1, kk, nh, h0, tid, nth)
        e = tid
        while e < T:
            sh[e] = arow[_word(e, j0, lt1, lc)]
            e = uint32(e + nth)
        cuda.syncthreads()
        if odd:  # the first stage (k-1) alone
            _radix2(sh, tw[gsel], True, half_t, tid, nth, two_q, nq)
            cuda.syncthreads()
        for pi in range(kk >> _U1):  # stages (s, s-1), s = k-1-odd, k-3-odd, ..., 1
            hb = uint32(kk - odd - uint32(2) - uint32(2 * pi) + lc)  # log2 distance, bit s-1
            tg = uint32(gsel << uint32(odd + uint32(2 * pi)))  # ks = k-1-s
            _radix4(sh, tw, True, hb, tg, quarter, tid, nth, two_q, nq)
            cuda.syncthreads()
        e = tid
        if last:  # fully reduced output: [0, 4q) -> [0, q)
            while e < T:
                v = sh[e]
                v = min(v, _wrapsub(v, two_q))
                arow[_word(e, j0, lt1, lc)] = min(v, _wrapsub(v, qq))
                e = uint32(e + nth)
        else:
            while e < T:
                arow[_word(e, j0, lt1, lc)] = sh[e]
                e = uint32(e + nth)
        cuda.syncthreads()
        row = uint32(row + uint32(cuda.gridDim.y))


@cuda.jit(cache=C.CACHE)
def _inv_group(a, R, L, N, q, wi, wis, ninv, ninvs, logt1, k, logC, last):
    sh = cuda.shared.array(TILE_MAX, dtype=uint32)
    tw = cuda.shared.array(TILE_MAX, dtype=uint64)
    tid = uint32(cuda.threadIdx.x)
    nth = uint32(cuda.blockDim.x)
    lt1, kk, lc, c0, h0 = _geometry(logt1, k, logC)
    j0, gsel, nh = _thread_column(tid, lt1, kk, lc, c0)
    T = uint32(_U1 << (lc + kk))
    half_t = uint32(T >> _U1)
    quarter = uint32(T >> uint32(2))
    odd = uint32(kk & _U1)
    row = uint32(cuda.blockIdx.y)
    while row < uint32(R):
        l = row % uint32(L)
        arow = a[row]
        qq = uint32(q[l])
        two_q = uint32(qq + qq)
        nq = uint32(uint64(0x100000000) - uint64(qq))
        _stage_twiddles(tw, wi[l], wis[l], N, lt1, kk, nh, h0, tid, nth)
        e = tid
        while e < T:
            sh[e] = arow[_word(e, j0, lt1, lc)]
            e = uint32(e + nth)
        cuda.syncthreads()
        for pi in range(kk >> _U1):  # stages (s, s+1), s = 0, 2, ...
            hb = uint32(uint32(2 * pi) + lc)  # log2 distance of bit s
            tg = uint32(gsel << uint32(kk - uint32(2) - uint32(2 * pi)))  # ks of stage s+1
            _radix4(sh, tw, False, hb, tg, quarter, tid, nth, two_q, nq)
            cuda.syncthreads()
        if odd:  # the last stage (k-1) alone
            _radix2(sh, tw[gsel], False, half_t, tid, nth, two_q, nq)
            cuda.syncthreads()
        e = tid
        if last:  # scaled by N^-1, fully reduced: [0, 2q) -> [0, q)
            ni = uint32(ninv[l])
            nis = uint32(ninvs[l])
            while e < T:
                v = _mulshoup(sh[e], ni, nis, nq)
                arow[_word(e, j0, lt1, lc)] = min(v, _wrapsub(v, qq))
                e = uint32(e + nth)
        else:
            while e < T:
                arow[_word(e, j0, lt1, lc)] = sh[e]
                e = uint32(e + nth)
        cuda.syncthreads()
        row = uint32(row + uint32(cuda.gridDim.y))


def _plan(log_n: int, tile: int) -> list[int]:
    """Stage counts per launch (forward order: largest strides first), as even as possible."""
    kmax = tile.bit_length() - 1
    ng = max(1, -(-log_n // kmax))
    base, extra = divmod(log_n, ng)
    return [base + (1 if g < extra else 0) for g in range(ng)]


def _block_threads(threads: int, tile: int, k: int) -> int:
    """Threads per block for a group of k stages: at most tile/2, rounded up to a multiple of
    the block's column count C = tile / 2^k, so that each thread keeps one column (its word
    offset and twiddle group are loop-invariant: the kernels rely on it)."""
    cols = tile >> k
    nthr = max(1, min(threads, tile // 2))
    return -(-nthr // cols) * cols


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
            nthr = _block_threads(threads, tile, k)
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
            nthr = _block_threads(threads, tile, k)
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
