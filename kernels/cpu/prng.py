"""ChaCha20 keystream (RFC 8439, 20 rounds) and samplers built on it (numba, CPU).

Every sampler output with flat index i consumes keystream words [w*i, w*(i+1)) of the stream
(key, nonce) starting at block counter 0, so the result is a pure function of (key, nonce, index)
and a GPU kernel can reproduce it element-parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "chacha20_blocks",
    "sample_uniform_mod",
    "sample_cbd",
    "sample_ternary",
    "sample_gaussian",
    "sample_uniform_bounded",
]

_M32 = np.uint64(0xFFFFFFFF)
_SIGMA_MAX = 2.0**59  # |N(0,1)| from 53-bit uniforms is < 8.6, so sigma * 8.6 < 2^63
# Blocks from which chacha20_blocks runs in parallel (same output either way). Below, the work
# is under ~16 ms on one core, and waking numba's threads right after a torch op, whose OpenMP
# workers still spin, cost more than it saves (DP-SGD's 12,721 blocks: 3.4-7.4 ms serial,
# 17-19 ms parallel, on the 2-core machine at load ~12).
_PAR_MIN_BLOCKS = 1 << 16


@njit(inline="always")
def _rotl(x, n):
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _M32


@njit(cache=True, nogil=True)
def _chacha_lanes(key, nonce, counter0, first, nb, out):
    """Blocks first..first+nb-1 (nb <= 16 lanes), vectorized across blocks."""
    x = np.empty((16, 16), dtype=np.uint32)
    s = np.empty(16, dtype=np.uint64)
    s[0] = np.uint64(0x61707865)
    s[1] = np.uint64(0x3320646E)
    s[2] = np.uint64(0x79622D32)
    s[3] = np.uint64(0x6B206574)
    for k in range(8):
        s[4 + k] = np.uint64(key[k])
    s[13] = np.uint64(nonce[0])
    s[14] = np.uint64(nonce[1])
    s[15] = np.uint64(nonce[2])
    for k in range(16):
        for b in range(16):
            x[k, b] = np.uint32(s[k])
    for b in range(16):
        x[12, b] = np.uint32((counter0 + first + b) & 0xFFFFFFFF)
    x0 = x.copy()
    for _ in range(10):
        for qa, qb, qc, qd in (
            (0, 4, 8, 12),
            (1, 5, 9, 13),
            (2, 6, 10, 14),
            (3, 7, 11, 15),
            (0, 5, 10, 15),
            (1, 6, 11, 12),
            (2, 7, 8, 13),
            (3, 4, 9, 14),
        ):
            for b in range(16):
                a_ = np.uint64(x[qa, b])
                b_ = np.uint64(x[qb, b])
                c_ = np.uint64(x[qc, b])
                d_ = np.uint64(x[qd, b])
                a_ = (a_ + b_) & _M32
                d_ = _rotl(d_ ^ a_, 16)
                c_ = (c_ + d_) & _M32
                b_ = _rotl(b_ ^ c_, 12)
                a_ = (a_ + b_) & _M32
                d_ = _rotl(d_ ^ a_, 8)
                c_ = (c_ + d_) & _M32
                b_ = _rotl(b_ ^ c_, 7)
                x[qa, b] = np.uint32(a_)
                x[qb, b] = np.uint32(b_)
                x[qc, b] = np.uint32(c_)
                x[qd, b] = np.uint32(d_)
    for b in range(nb):
        for k in range(16):
            out[first + b, k] = np.uint32((np.uint64(x[k, b]) + np.uint64(x0[k, b])) & _M32)


@njit(cache=True, nogil=True, parallel=True)
def _chacha_par(key, nonce, counter0, out):
    nblocks = out.shape[0]
    ngroups = (nblocks + 15) // 16
    for g in prange(ngroups):
        first = g * 16
        nb = min(16, nblocks - first)
        _chacha_lanes(key, nonce, counter0, first, nb, out)


@njit(cache=True, nogil=True)
def _chacha_serial(key, nonce, counter0, out):
    nblocks = out.shape[0]
    ngroups = (nblocks + 15) // 16
    for g in range(ngroups):
        first = g * 16
        nb = min(16, nblocks - first)
        _chacha_lanes(key, nonce, counter0, first, nb, out)


def _as_words(x, n: int, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint32 array of length {n}")
    if x.dtype != np.uint32 or x.shape != (n,):
        raise ValueError(f"{name} must be uint32 with shape ({n},), got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)


def chacha20_blocks(key: np.ndarray, nonce: np.ndarray, counter0: int, nblocks: int) -> np.ndarray:
    """ChaCha20 keystream: uint32 (nblocks, 16), block b uses counter (counter0 + b) mod 2^32."""
    key = _as_words(key, 8, "key")
    nonce = _as_words(nonce, 3, "nonce")
    counter0 = int(counter0)
    nblocks = int(nblocks)
    if not 0 <= counter0 < 2**32:
        raise ValueError("counter0 must be in [0, 2^32)")
    if nblocks < 0 or counter0 + nblocks > 2**32:
        raise ValueError("nblocks must be >= 0 and the 32-bit block counter must not wrap")
    out = np.empty((nblocks, 16), dtype=np.uint32)
    if nblocks == 0:
        return out
    if nblocks >= _PAR_MIN_BLOCKS:
        _chacha_par(key, nonce, np.int64(counter0), out)
    else:
        _chacha_serial(key, nonce, np.int64(counter0), out)
    return out


def _keystream_words(key, nonce, nwords: int) -> np.ndarray:
    nblocks = (nwords + 15) // 16
    return chacha20_blocks(key, nonce, 0, nblocks).reshape(-1)[:nwords]


# ---------------------------------------------------------------- samplers


@njit(inline="always")
def _mulshift128_32(w0, w1, w2, w3, q):
    # floor(v * q / 2^128) for v = w0 + w1 2^32 + w2 2^64 + w3 2^96 and q < 2^32, exactly, by
    # one carry chain of 32x32-bit products (each partial sum < 2^64: (2^32-1)^2 + 2^32 - 1)
    c = (w0 * q) >> np.uint64(32)
    c = (w1 * q + c) >> np.uint64(32)
    c = (w2 * q + c) >> np.uint64(32)
    return (w3 * q + c) >> np.uint64(32)


@njit(cache=True, nogil=True, parallel=True)
def _uniform_mod_kernel(ks, moduli, L, N, out):
    for row in prange(out.shape[0] // N):  # one modulus per row, no division per output
        q = np.uint64(moduli[row % L])
        for i in range(row * N, (row + 1) * N):
            out[i] = np.uint32(
                _mulshift128_32(
                    np.uint64(ks[4 * i]), np.uint64(ks[4 * i + 1]), np.uint64(ks[4 * i + 2]),
                    np.uint64(ks[4 * i + 3]), q,
                )
            )  # fmt: skip


def sample_uniform_mod(key, nonce, moduli: np.ndarray, shape: tuple) -> np.ndarray:
    """Uniform residues: shape (..., L, N), uint32; limb l of output i is floor(v * q_l / 2^128)
    for the 128-bit little-endian value v of its 4 keystream words (Lemire's multiply-shift on
    the whole 128 bits: every residue has floor or ceil of 2^128 / q_l preimages, so the
    statistical distance from uniform is < q_l / 2^128 < 2^-96, as for v mod q_l)."""
    mods = np.ascontiguousarray(np.asarray(moduli, dtype=np.uint64)).reshape(-1)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[-2] != mods.shape[0]:
        raise ValueError(f"shape must be (..., L={mods.shape[0]}, N), got {shape}")
    if np.any(mods < 2) or np.any(mods >= 2**32):
        raise ValueError("moduli must be in [2, 2^32)")
    if any(s < 0 for s in shape):
        raise ValueError("negative dimension")
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(count, dtype=np.uint32)
    if count:
        ks = _keystream_words(key, nonce, 4 * count)
        _uniform_mod_kernel(ks, mods, mods.shape[0], shape[-1], out)
    return out.reshape(shape)


@njit(inline="always")
def _popcount21(x):
    x = x & np.uint64(0x1FFFFF)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x55555555))
    x = (x & np.uint64(0x33333333)) + ((x >> np.uint64(2)) & np.uint64(0x33333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F)
    return np.int64((x * np.uint64(0x01010101) & _M32) >> np.uint64(24))


@njit(cache=True, nogil=True, parallel=True)
def _cbd_kernel(ks, out):
    for i in prange(out.shape[0]):
        out[i] = _popcount21(np.uint64(ks[2 * i])) - _popcount21(np.uint64(ks[2 * i + 1]))


def _check_count(count) -> int:
    count = int(count)
    if count < 0:
        raise ValueError("count must be >= 0")
    return count


def sample_cbd(key, nonce, count: int) -> np.ndarray:
    """Centered binomial, eta = 21: popcount(w0 & 0x1FFFFF) - popcount(w1 & 0x1FFFFF); int64."""
    count = _check_count(count)
    out = np.empty(count, dtype=np.int64)
    if count:
        _cbd_kernel(_keystream_words(key, nonce, 2 * count), out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _ternary_kernel(ks, out):
    for i in prange(out.shape[0]):
        # floor(3 v / 2^64) for v = w0 + w1 2^32 (multiply-shift; bias < 3 / 2^64)
        c = (np.uint64(ks[2 * i]) * np.uint64(3)) >> np.uint64(32)
        r = (np.uint64(ks[2 * i + 1]) * np.uint64(3) + c) >> np.uint64(32)
        out[i] = np.int64(r) - 1


def sample_ternary(key, nonce, count: int) -> np.ndarray:
    """floor(3 (w0 + w1*2^32) / 2^64) - 1 in {-1, 0, 1}; int64."""
    count = _check_count(count)
    out = np.empty(count, dtype=np.int64)
    if count:
        _ternary_kernel(_keystream_words(key, nonce, 2 * count), out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _gauss_kernel(ks, sigma, out):
    two53 = 9007199254740992.0
    for i in prange(out.shape[0]):
        h1 = np.uint64(ks[4 * i]) >> np.uint64(5)
        l1 = np.uint64(ks[4 * i + 1]) >> np.uint64(6)
        h2 = np.uint64(ks[4 * i + 2]) >> np.uint64(5)
        l2 = np.uint64(ks[4 * i + 3]) >> np.uint64(6)
        u1 = np.float64((h1 << np.uint64(26)) + l1 + np.uint64(1)) / two53
        u2 = np.float64((h2 << np.uint64(26)) + l2) / two53
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        out[i] = np.int64(np.rint(sigma * z))


def sample_gaussian(key, nonce, count: int, sigma: float) -> np.ndarray:
    """Rounded continuous Gaussian (Box-Muller on 53-bit uniforms), std sigma; int64.

    0 < sigma < 2^59 (so that every output fits in int64).
    """
    count = _check_count(count)
    sigma = float(sigma)
    if not (sigma > 0.0) or not (sigma < _SIGMA_MAX):
        raise ValueError(f"sigma must be in (0, 2^59), got {sigma}")
    out = np.empty(count, dtype=np.int64)
    if count:
        _gauss_kernel(_keystream_words(key, nonce, 4 * count), sigma, out)
    return out


@njit(inline="always")
def _mulshift128_64(w0, w1, w2, w3, m0, m1):
    # floor(v * m / 2^128) for the 128-bit v = w0 + w1 2^32 + w2 2^64 + w3 2^96 and
    # m = m0 + m1 2^32 < 2^64, exactly: the row v * m0 (words a1..a4, a0 only carries), then the
    # row v * m1 added one word up with its carries; every partial sum is < 2^64
    # ((2^32-1)^2 + 2 (2^32-1) = 2^64 - 1), and the last one is the result (< m)
    s32 = np.uint64(32)
    t = w0 * m0
    t = w1 * m0 + (t >> s32)
    a1 = t & _M32
    t = w2 * m0 + (t >> s32)
    a2 = t & _M32
    t = w3 * m0 + (t >> s32)
    a3 = t & _M32
    a4 = t >> s32
    t = w0 * m1 + a1
    t = w1 * m1 + a2 + (t >> s32)
    t = w2 * m1 + a3 + (t >> s32)
    return w3 * m1 + a4 + (t >> s32)


@njit(cache=True, nogil=True, parallel=True)
def _bounded_kernel(ks, m, bound, out):
    m0 = m & _M32
    m1 = m >> np.uint64(32)
    for i in prange(out.shape[0]):
        r = _mulshift128_64(
            np.uint64(ks[4 * i]), np.uint64(ks[4 * i + 1]), np.uint64(ks[4 * i + 2]),
            np.uint64(ks[4 * i + 3]), m0, m1,
        )  # fmt: skip
        out[i] = np.int64(r) - bound


def sample_uniform_bounded(key, nonce, bound: int, count: int) -> np.ndarray:
    """Uniform integers in [-bound, bound]: floor(v * (2*bound+1) / 2^128) - bound for the
    128-bit value v of 4 keystream words (multiply-shift; bias < (2*bound+1) / 2^128); int64."""
    count = _check_count(count)
    bound = int(bound)
    if not 0 <= bound < 2**62:
        raise ValueError("bound must be in [0, 2^62)")
    out = np.empty(count, dtype=np.int64)
    if count:
        ks = _keystream_words(key, nonce, 4 * count)
        _bounded_kernel(ks, np.uint64(2 * bound + 1), np.int64(bound), out)
    return out
