"""ChaCha20 keystream (RFC 8439) and the samplers built on it, on the GPU, bit-identical to
``kernels.cpu.prng``.

The CPU contract: sampler output i consumes keystream words [w*i, w*(i+1)) of the stream
(key, nonce) from block counter 0 (w = 2 for cbd/ternary, 4 for the others). Since w divides 16,
the words of one output always lie in one 64-byte block, so:

Launch design: a 1-D grid with ONE THREAD PER 64-BYTE KEYSTREAM BLOCK (ELEMWISE_THREADS per
block, bounds checked). The thread computes its block in registers (20 rounds, unrolled quarter
rounds on 32-bit words: funnel-shift rotates) and emits the 16/w outputs that consume it. This
is the same mapping as "one thread per output computing its block" but without recomputing the
block 16/w times. `chacha20_blocks` uses the same thread-per-block kernel and writes the raw
block.

Gaussian: Box-Muller in float64 with the CUDA libm (log, cos, sqrt). Under the simulator this is
the host libm, so outputs equal the CPU bit for bit; on a real GPU CUDA's log/cos differ from
glibc by up to ~2 ulp, so an output may (rarely: only when sigma*z lies within ~1e-15 relative of
a half-integer) differ by +-1. Keys and CRS never use this sampler (ternary / uniform are exact).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, float64, int64, uint32, uint64

from kernels.cuda import _common as C
from kernels.cuda._common import madwide, mulhi32, popc

__all__ = [
    "chacha20_blocks",
    "sample_uniform_mod",
    "sample_cbd",
    "sample_ternary",
    "sample_gaussian",
    "sample_uniform_bounded",
]

_M32 = np.uint64(0xFFFFFFFF)
_SIGMA_MAX = 2.0**59


@cuda.jit(device=True, inline=True)
def _rotl(x, n):
    # 32-bit rotate (one funnel shift); the 64-bit shift of the widened word keeps the simulator
    # free of overflow warnings, and the truncation drops the bits shifted out
    return uint32(((uint64(x) << uint64(n)) | (uint64(x) >> uint64(32 - n))) & _M32)


@cuda.jit(device=True, inline=True)
def _qr(a, b, c, d):
    # the quarter round on 32-bit words (additions wrap mod 2^32 by the truncating casts)
    a = uint32((uint64(a) + uint64(b)) & _M32)
    d = _rotl(uint32(d ^ a), 16)
    c = uint32((uint64(c) + uint64(d)) & _M32)
    b = _rotl(uint32(b ^ c), 12)
    a = uint32((uint64(a) + uint64(b)) & _M32)
    d = _rotl(uint32(d ^ a), 8)
    c = uint32((uint64(c) + uint64(d)) & _M32)
    b = _rotl(uint32(b ^ c), 7)
    return a, b, c, d


@cuda.jit(device=True)
def _block(kn, ctr, ks):
    """ChaCha20 block with counter `ctr` (uint64 < 2^32) into ks[0:16] (uint32)."""
    s0 = uint32(0x61707865)
    s1 = uint32(0x3320646E)
    s2 = uint32(0x79622D32)
    s3 = uint32(0x6B206574)
    s4 = uint32(kn[0])
    s5 = uint32(kn[1])
    s6 = uint32(kn[2])
    s7 = uint32(kn[3])
    s8 = uint32(kn[4])
    s9 = uint32(kn[5])
    s10 = uint32(kn[6])
    s11 = uint32(kn[7])
    s12 = uint32(ctr & _M32)
    s13 = uint32(kn[8])
    s14 = uint32(kn[9])
    s15 = uint32(kn[10])
    x0, x1, x2, x3, x4, x5, x6, x7 = s0, s1, s2, s3, s4, s5, s6, s7
    x8, x9, x10, x11, x12, x13, x14, x15 = s8, s9, s10, s11, s12, s13, s14, s15
    for _ in range(10):
        x0, x4, x8, x12 = _qr(x0, x4, x8, x12)
        x1, x5, x9, x13 = _qr(x1, x5, x9, x13)
        x2, x6, x10, x14 = _qr(x2, x6, x10, x14)
        x3, x7, x11, x15 = _qr(x3, x7, x11, x15)
        x0, x5, x10, x15 = _qr(x0, x5, x10, x15)
        x1, x6, x11, x12 = _qr(x1, x6, x11, x12)
        x2, x7, x8, x13 = _qr(x2, x7, x8, x13)
        x3, x4, x9, x14 = _qr(x3, x4, x9, x14)
    ks[0] = uint32((uint64(x0) + uint64(s0)) & _M32)
    ks[1] = uint32((uint64(x1) + uint64(s1)) & _M32)
    ks[2] = uint32((uint64(x2) + uint64(s2)) & _M32)
    ks[3] = uint32((uint64(x3) + uint64(s3)) & _M32)
    ks[4] = uint32((uint64(x4) + uint64(s4)) & _M32)
    ks[5] = uint32((uint64(x5) + uint64(s5)) & _M32)
    ks[6] = uint32((uint64(x6) + uint64(s6)) & _M32)
    ks[7] = uint32((uint64(x7) + uint64(s7)) & _M32)
    ks[8] = uint32((uint64(x8) + uint64(s8)) & _M32)
    ks[9] = uint32((uint64(x9) + uint64(s9)) & _M32)
    ks[10] = uint32((uint64(x10) + uint64(s10)) & _M32)
    ks[11] = uint32((uint64(x11) + uint64(s11)) & _M32)
    ks[12] = uint32((uint64(x12) + uint64(s12)) & _M32)
    ks[13] = uint32((uint64(x13) + uint64(s13)) & _M32)
    ks[14] = uint32((uint64(x14) + uint64(s14)) & _M32)
    ks[15] = uint32((uint64(x15) + uint64(s15)) & _M32)


@cuda.jit(cache=C.CACHE)
def _chacha_kernel(kn, counter0, out, nblocks):
    b = cuda.grid(1)
    if b >= nblocks:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(counter0) + uint64(b), ks)
    for k in range(16):
        out[b, k] = ks[k]


@cuda.jit(device=True, inline=True)
def _mulshift128_32(w0, w1, w2, w3, q):
    # floor(v * q / 2^128), v = w0 + w1 2^32 + w2 2^64 + w3 2^96, q < 2^32 (as the CPU): one
    # high-half multiply and three mad.wide.u32 whose high words carry (each sum < 2^64)
    c = mulhi32(w0, q)
    c = uint32(madwide(w1, q, c) >> uint64(32))
    c = uint32(madwide(w2, q, c) >> uint64(32))
    return uint32(madwide(w3, q, c) >> uint64(32))


@cuda.jit(device=True, inline=True)
def _divmod32(x, d, m):
    # (x // d, x % d) for 32-bit x and d >= 1, m = min(2^32 - 1, 2^32 // d) from the host: the
    # estimate mulhi(x, m) > x/d - 1 is at most one below the quotient, so one correction
    qt = mulhi32(x, m)
    r = uint32(x - qt * d)
    if r >= d:
        qt = uint32(qt + 1)
        r = uint32(r - d)
    return qt, r


@cuda.jit(cache=C.CACHE)
def _uniform_mod_kernel(kn, moduli, L, N, mL, mN, out, count):
    # Output i is floor(v * q_l / 2^128) for the 128-bit value v of its 4 key-stream words (as
    # the CPU): 32-bit multiply-adds only. The limb of the thread's first output comes from two
    # divisions by invariants (host multipliers mL, mN); the next ones step it (the launcher
    # checks count < 2^32).
    b = cuda.grid(1)
    if 4 * b >= count:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(b), ks)
    N32 = uint32(N)
    L32 = uint32(L)
    i0 = uint32(4 * b)
    row, col = _divmod32(i0, N32, mN)
    _, l = _divmod32(row, L32, mL)
    for e in range(4):
        i = i0 + uint32(e)
        if i < uint32(count):
            out[i] = _mulshift128_32(ks[4 * e], ks[4 * e + 1], ks[4 * e + 2], ks[4 * e + 3],
                                     moduli[l])  # fmt: skip
            col = uint32(col + 1)
            while col >= N32:
                col = uint32(col - N32)
                l = uint32(l + 1)
                if l == L32:
                    l = uint32(0)


@cuda.jit(cache=C.CACHE)
def _cbd_kernel(kn, out, count):
    b = cuda.grid(1)
    if 8 * b >= count:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(b), ks)
    for e in range(8):
        i = 8 * b + e
        if i < count:
            # popcount(w0 & 0x1FFFFF) - popcount(w1 & 0x1FFFFF), one POPC per word
            m21 = uint32(0x1FFFFF)
            out[i] = int64(popc(uint32(ks[2 * e] & m21))) - int64(popc(uint32(ks[2 * e + 1] & m21)))


@cuda.jit(cache=C.CACHE)
def _ternary_kernel(kn, out, count):
    b = cuda.grid(1)
    if 8 * b >= count:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(b), ks)
    for e in range(8):
        i = 8 * b + e
        if i < count:
            # floor(3 (w0 + w1 2^32) / 2^64) - 1, as the CPU: a high-half multiply, a mad.wide
            c = mulhi32(ks[2 * e], uint32(3))
            out[i] = int64(madwide(ks[2 * e + 1], uint32(3), c) >> uint64(32)) - int64(1)


@cuda.jit(device=True, inline=True)
def _rint(x):
    # round half to even, exactly like np.rint, as an int64 (|x| < 2^63 by the sigma bound);
    # x - floor(x) is exact in float64. Integer ops only: math.floor returns int64 in numba.
    f = int64(math.floor(x))
    d = x - float64(f)
    if d > 0.5:
        f += int64(1)
    elif d == 0.5 and (f & int64(1)) != int64(0):
        f += int64(1)
    return f


@cuda.jit(cache=C.CACHE)
def _gauss_kernel(kn, sigma, out, count):
    b = cuda.grid(1)
    if 4 * b >= count:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(b), ks)
    two53 = 9007199254740992.0
    for e in range(4):
        i = 4 * b + e
        if i < count:
            h1 = uint64(ks[4 * e]) >> uint64(5)
            l1 = uint64(ks[4 * e + 1]) >> uint64(6)
            h2 = uint64(ks[4 * e + 2]) >> uint64(5)
            l2 = uint64(ks[4 * e + 3]) >> uint64(6)
            u1 = float64((h1 << uint64(26)) + l1 + uint64(1)) / two53
            u2 = float64((h2 << uint64(26)) + l2) / two53
            z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
            out[i] = _rint(sigma * z)


@cuda.jit(device=True, inline=True)
def _mulshift128_64(w0, w1, w2, w3, m0, m1):
    # floor(v * m / 2^128) for the 128-bit v and m = m0 + m1 2^32 < 2^64 (as the CPU): the row
    # v * m0 by mad.wide with carries, then the row v * m1 one word up; each sum < 2^64
    t = madwide(w0, m0, uint64(0))
    t = madwide(w1, m0, t >> uint64(32))
    a1 = uint32(t)
    t = madwide(w2, m0, t >> uint64(32))
    a2 = uint32(t)
    t = madwide(w3, m0, t >> uint64(32))
    a3 = uint32(t)
    a4 = uint32(t >> uint64(32))
    t = madwide(w0, m1, uint64(a1))
    t = madwide(w1, m1, uint64(a2) + (t >> uint64(32)))
    t = madwide(w2, m1, uint64(a3) + (t >> uint64(32)))
    return madwide(w3, m1, uint64(a4) + (t >> uint64(32)))


@cuda.jit(cache=C.CACHE)
def _bounded_kernel(kn, m, bound, out, count):
    # output i: floor(v * m / 2^128) - bound, m = 2 bound + 1 < 2^63 (as the CPU); no division
    b = cuda.grid(1)
    if 4 * b >= count:
        return
    ks = cuda.local.array(16, dtype=uint32)
    _block(kn, uint64(b), ks)
    m0 = uint32(m & _M32)
    m1 = uint32(m >> uint64(32))
    for e in range(4):
        i = 4 * b + e
        if i < count:
            r = _mulshift128_64(ks[4 * e], ks[4 * e + 1], ks[4 * e + 2], ks[4 * e + 3], m0, m1)
            out[i] = int64(r) - bound


# ---------------------------------------------------------------- wrappers


def _as_words(x: Any, n: int, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint32 array of length {n}")
    if x.dtype != np.uint32 or x.shape != (n,):
        raise ValueError(f"{name} must be uint32 with shape ({n},), got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)


def _key_nonce(key: Any, nonce: Any) -> Any:
    kn = np.concatenate([_as_words(key, 8, "key"), _as_words(nonce, 3, "nonce")])
    return C.arg(C.const_dev(kn))


def _launch(kernel: Any, nblocks: int, *args: Any) -> None:
    grid, threads = C.grid_1d(nblocks)
    C.launch(kernel, grid, threads, *args)


def _div_mult(d: int) -> np.uint32:
    """The multiplier of `_divmod32` for the divisor d >= 1."""
    return np.uint32(min(2**32 - 1, 2**32 // d))


def _check_count(count: Any) -> int:
    count = int(count)
    if count < 0:
        raise ValueError("count must be >= 0")
    return count


def chacha20_blocks(key: Any, nonce: Any, counter0: int, nblocks: int) -> Any:
    """ChaCha20 keystream: uint32 (nblocks, 16) device array, block b uses counter counter0+b."""
    kn = _key_nonce(key, nonce)
    counter0 = int(counter0)
    nblocks = int(nblocks)
    if not 0 <= counter0 < 2**32:
        raise ValueError("counter0 must be in [0, 2^32)")
    if nblocks < 0 or counter0 + nblocks > 2**32:
        raise ValueError("nblocks must be >= 0 and the 32-bit block counter must not wrap")
    out = C.xp().empty((nblocks, 16), dtype=np.uint32)
    if nblocks:
        _launch(_chacha_kernel, nblocks, kn, np.uint64(counter0), C.arg(out), nblocks)
    return out


def sample_uniform_mod(key: Any, nonce: Any, moduli: Any, shape: tuple) -> Any:
    """Uniform residues (..., L, N), uint32: floor(v * moduli[l] / 2^128) for the 128-bit value
    v of each output's 4 keystream words (multiply-shift, as the CPU); a device array."""
    mods = np.ascontiguousarray(np.asarray(C.to_host(moduli), dtype=np.uint64)).reshape(-1)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[-2] != mods.shape[0]:
        raise ValueError(f"shape must be (..., L={mods.shape[0]}, N), got {shape}")
    if np.any(mods < 2) or np.any(mods >= 2**32):
        raise ValueError("moduli must be in [2, 2^32)")
    if any(s < 0 for s in shape):
        raise ValueError("negative dimension")
    kn = _key_nonce(key, nonce)
    count = int(np.prod(shape, dtype=np.int64))
    if count >= 1 << 32:
        raise ValueError(f"{count} residues: the uniform sampler indexes with 32 bits")
    out = C.xp().empty(count, dtype=np.uint32)
    if count:
        _launch(
            _uniform_mod_kernel, -(-count // 4), kn, C.arg(C.const_dev(mods.astype(np.uint32))),
            mods.shape[0], shape[-1], _div_mult(mods.shape[0]), _div_mult(shape[-1]),
            C.arg(out), count,
        )  # fmt: skip
    return out.reshape(shape)


def sample_cbd(key: Any, nonce: Any, count: int) -> Any:
    """Centered binomial, eta = 21; int64 device array."""
    count = _check_count(count)
    kn = _key_nonce(key, nonce)
    out = C.xp().empty(count, dtype=np.int64)
    if count:
        _launch(_cbd_kernel, -(-count // 8), kn, C.arg(out), count)
    return out


def sample_ternary(key: Any, nonce: Any, count: int) -> Any:
    """floor(3 (w0 + w1*2^32) / 2^64) - 1 in {-1, 0, 1}; int64 device array."""
    count = _check_count(count)
    kn = _key_nonce(key, nonce)
    out = C.xp().empty(count, dtype=np.int64)
    if count:
        _launch(_ternary_kernel, -(-count // 8), kn, C.arg(out), count)
    return out


def sample_gaussian(key: Any, nonce: Any, count: int, sigma: float) -> Any:
    """Rounded continuous Gaussian (Box-Muller on 53-bit uniforms), std sigma; int64 device
    array. May differ from the CPU by +-1 on rare elements on real GPUs (libm; see module doc)."""
    count = _check_count(count)
    sigma = float(sigma)
    if not (sigma > 0.0) or not (sigma < _SIGMA_MAX):
        raise ValueError(f"sigma must be in (0, 2^59), got {sigma}")
    kn = _key_nonce(key, nonce)
    out = C.xp().empty(count, dtype=np.int64)
    if count:
        _launch(_gauss_kernel, -(-count // 4), kn, np.float64(sigma), C.arg(out), count)
    return out


def sample_uniform_bounded(key: Any, nonce: Any, bound: int, count: int) -> Any:
    """Uniform integers in [-bound, bound]: floor(v * (2*bound+1) / 2^128) - bound for the
    128-bit value v of 4 keystream words (multiply-shift, as the CPU); int64 device array."""
    count = _check_count(count)
    bound = int(bound)
    if not 0 <= bound < 2**62:
        raise ValueError("bound must be in [0, 2^62)")
    kn = _key_nonce(key, nonce)
    out = C.xp().empty(count, dtype=np.int64)
    if count:
        _launch(
            _bounded_kernel, -(-count // 4), kn, np.uint64(2 * bound + 1), np.int64(bound),
            C.arg(out), count,
        )  # fmt: skip
    return out
