"""The arithmetic of the compressed wire forms: round(x 2^k / Q') and its lift, in words.

`compress_residues` maps residues mod Q' = q_1...q_L to k-bit values held as W = ceil(k/32)
little-endian 32-bit words, `lift_words` maps them back, `add_words` adds in Z_2^k. Exact
integer work in uint64 (no big integers): numba kernels on the CPU, array expressions on any
other array module (CuPy). The error bounds are in gpubfv/mhe/noise.py; the wire types that
use this are in gpubfv/mhe/compressed.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange, uint64

from gpubfv.backend import Backend

MAX_COMPRESSED_BITS = 512
#: bound on the float64 error of the fractional sum in `compress_residues`, in units of
#: 2^-bits Q': L terms f_i * (1/q_i) each within 2^-52 of f_i/q_i (two roundings), L additions
#: within 2^-53 * L each; below 2^-40 for every L <= 64 (beyond every 128-bit set)
ROUND_SLACK = 2.0**-40
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def word_count(bits: int) -> int:
    """W: the 32-bit words of one compressed coefficient."""
    return -(-bits // 32)


def word_widths(bits: int) -> tuple[int, ...]:
    """Bit widths of the W words, least significant first (the top word holds the rest)."""
    w = word_count(bits)
    return (32,) * (w - 1) + (bits - 32 * (w - 1),)


def check_bits(bits: Any) -> int:
    """`bits` itself if it is a compressed width this module handles, else ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_COMPRESSED_BITS:
        raise ValueError(
            f"compressed bits must be an int in 1..{MAX_COMPRESSED_BITS}, got {bits!r}"
        )
    return bits


def _words(value: int, count: int) -> list[int]:
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(count)]


@dataclass(frozen=True)
class _Tables:
    """Host constants of one (moduli, bits) pair (Python ints turned to uint64 once)."""

    q: np.ndarray  # (L,) moduli
    q_tilde: np.ndarray  # (L,) (Q'/q_i)^-1 mod q_i
    whole: np.ndarray  # (L, W) words of floor(2^bits / q_i) mod 2^bits
    frac: np.ndarray  # (L,) 2^bits mod q_i
    q_low: tuple[int, ...]  # words of Q' mod 2^bits
    half: tuple[int, ...]  # words of 2^(bits-1)
    word_mod: np.ndarray  # (L, W) 2^(32 w) mod q_i
    half_mod: np.ndarray  # (L,) 2^(bits-1) mod q_i
    inv_2k: np.ndarray  # (L,) 2^-bits mod q_i
    # Shoup companions floor(w 2^32 / q) of the constants above (CPU kernels)
    q_tilde_sh: np.ndarray
    frac_sh: np.ndarray
    word_mod_sh: np.ndarray
    inv_2k_sh: np.ndarray


@functools.lru_cache(maxsize=64)
def _tables(moduli: tuple[int, ...], bits: int) -> _Tables:
    big_q = 1
    for q in moduli:
        big_q *= q
    w = word_count(bits)
    two_k = 1 << bits

    def u64(rows: list[Any]) -> np.ndarray:
        return np.array(rows, dtype=np.uint64)

    def shoup(values: list[int]) -> list[int]:
        return [(v << 32) // q for v, q in zip(values, moduli, strict=True)]

    q_tilde = [pow(big_q // q, -1, q) for q in moduli]
    frac = [two_k % q for q in moduli]
    word_mod = [[pow(2, 32 * i, q) for i in range(w)] for q in moduli]
    inv_2k = [pow(2, -bits, q) for q in moduli]
    return _Tables(
        q=u64(list(moduli)),
        q_tilde=u64(q_tilde),
        whole=u64([_words((two_k // q) % two_k, w) for q in moduli]),
        frac=u64(frac),
        q_low=tuple(_words(big_q % two_k, w)),
        half=tuple(_words(two_k >> 1, w)),
        word_mod=u64(word_mod),
        half_mod=u64([(two_k >> 1) % q for q in moduli]),
        inv_2k=u64(inv_2k),
        q_tilde_sh=u64(shoup(q_tilde)),
        frac_sh=u64(shoup(frac)),
        word_mod_sh=u64([[(c << 32) // q for c in row] for row, q in zip(word_mod, moduli)]),
        inv_2k_sh=u64(shoup(inv_2k)),
    )


# ---- CPU kernels (numba; one pass per coefficient, no temporaries) -----------------------------
@njit(cache=True, inline="always")
def _shoup(x, w, w_sh, q):  # pragma: no cover - numba
    """(x * w) mod q and floor(x * w / q) for x < 2^32, w < q < 2^32, w_sh = floor(w 2^32/q)."""
    hi = (x * w_sh) >> uint64(32)
    r = x * w - hi * q
    if r >= q:
        r -= q
        hi += uint64(1)
    return r, hi


@njit(cache=True, nogil=True, parallel=True)
def _compress_kernel(
    x, q, inv_q, q_tilde, q_tilde_sh, whole, frac, frac_sh, top_mask, out
):  # pragma: no cover
    rows, nl, n = x.shape
    w = out.shape[1]
    m32 = uint64(0xFFFFFFFF)
    for r in prange(rows):
        acc = np.zeros(w + 1, dtype=np.uint64)
        for i in range(n):
            acc[:] = 0
            low = uint64(0)
            fsum = 0.0
            for j in range(nl):
                qj = q[j]
                a, _ = _shoup(uint64(x[r, j, i]), q_tilde[j], q_tilde_sh[j], qj)
                f, g = _shoup(a, frac[j], frac_sh[j], qj)
                low += g
                fsum += float(f) * inv_q[j]
                for v in range(w):
                    p = a * whole[j, v]
                    acc[v] += p & m32
                    acc[v + 1] += p >> uint64(32)
            acc[0] += low + uint64(np.floor(fsum + 0.5))
            for v in range(w - 1):
                acc[v + 1] += acc[v] >> uint64(32)
                out[r, v, i] = acc[v] & m32
            out[r, w - 1, i] = acc[w - 1] & top_mask


@njit(cache=True, nogil=True, parallel=True)
def _lift_kernel(
    y, q, q_low, half, wm, wm_sh, half_mod, inv, inv_sh, top_mask, out
):  # pragma: no cover
    rows, w, n = y.shape
    nl = out.shape[1]
    m32 = uint64(0xFFFFFFFF)
    for r in prange(rows):
        acc = np.zeros(w, dtype=np.uint64)
        for i in range(n):
            for v in range(w):
                acc[v] = half[v]
            for u in range(w):
                yu = uint64(y[r, u, i])
                for v in range(w - u):
                    p = yu * q_low[v]
                    acc[u + v] += p & m32
                    if u + v + 1 < w:
                        acc[u + v + 1] += p >> uint64(32)
            for v in range(w - 1):
                acc[v + 1] += acc[v] >> uint64(32)
                acc[v] &= m32
            acc[w - 1] &= top_mask
            for j in range(nl):
                qj = q[j]
                rem = uint64(0)
                for v in range(w):
                    t, _ = _shoup(acc[v], wm[j, v], wm_sh[j, v], qj)
                    rem += t
                    if rem >= qj:
                        rem -= qj
                d = half_mod[j] + qj - rem
                if d >= qj:
                    d -= qj
                res, _ = _shoup(d, inv[j], inv_sh[j], qj)
                out[r, j, i] = res


def _top_mask(bits: int) -> np.uint64:
    return np.uint64((1 << (bits - 32 * (word_count(bits) - 1))) - 1)


def _carry(xp: Any, acc: Any, bits: int) -> Any:
    """Propagate carries of uint64 accumulators (..., W, N) into 32-bit words mod 2^bits."""
    w = acc.shape[-2]
    for i in range(w - 1):
        acc[..., i + 1, :] += acc[..., i, :] >> _S32
        acc[..., i, :] &= _M32
    acc[..., w - 1, :] &= np.uint64((1 << (bits - 32 * (w - 1))) - 1)
    return acc.astype(xp.uint32)


def compress_residues(
    x: Any, moduli: tuple[int, ...], bits: int, *, array_path: bool = False
) -> Any:
    """round(x * 2^bits / Q') mod 2^bits of residues x (..., L, N): words (..., W, N).

    `array_path`: take the array-expression path (the one CuPy arrays take) for numpy too.

    With a_i = x_i (Q'/q_i)^-1 mod q_i, x + v Q' = sum a_i Q'/q_i for an integer v, so
    x 2^bits / Q' = sum a_i 2^bits / q_i (mod 2^bits). Each term splits exactly into
    a_i floor(2^bits/q_i) + floor(a_i r_i / q_i) + (a_i r_i mod q_i) / q_i, r_i = 2^bits mod q_i;
    only the last fractions are summed in float64 before the one rounding.
    """
    bits = check_bits(bits)
    xp = Backend.for_array(x).xp
    tb = _tables(tuple(int(q) for q in moduli), bits)
    if x.shape[-2] != len(moduli):
        raise ValueError(f"residues of {x.shape[-2]} limbs over {len(moduli)} moduli")
    w = word_count(bits)
    if xp is np and not array_path:
        flat = np.ascontiguousarray(x).reshape(-1, len(moduli), x.shape[-1])
        out = np.empty((flat.shape[0], w, x.shape[-1]), dtype=np.uint32)
        if flat.size:
            _compress_kernel(
                flat, tb.q, 1.0 / tb.q.astype(np.float64), tb.q_tilde, tb.q_tilde_sh,
                tb.whole, tb.frac, tb.frac_sh, _top_mask(bits), out,
            )  # fmt: skip
        return out.reshape(x.shape[:-2] + (w, x.shape[-1]))
    q = xp.asarray(tb.q)[:, None]
    a = (x.astype(xp.uint64) * xp.asarray(tb.q_tilde)[:, None]) % q  # (..., L, N)
    ar = a * xp.asarray(tb.frac)[:, None]  # < 2^60
    low = (ar // q).sum(axis=-2)  # < L 2^30
    fsum = ((ar % q).astype(xp.float64) / q.astype(xp.float64)).sum(axis=-2)
    acc = xp.zeros(x.shape[:-2] + (w + 1, x.shape[-1]), dtype=xp.uint64)
    acc[..., 0, :] = low + xp.floor(fsum + 0.5).astype(xp.uint64)
    whole = xp.asarray(tb.whole)
    for i in range(len(moduli)):
        ai = a[..., i, :]
        for j in range(w):
            p = ai * whole[i, j]  # < 2^62
            acc[..., j, :] += p & _M32
            acc[..., j + 1, :] += p >> _S32
    return _carry(xp, acc[..., :w, :], bits)


def lift_words(y: Any, moduli: tuple[int, ...], bits: int, *, array_path: bool = False) -> Any:
    """round(y * Q' / 2^bits) mod Q' of words y (..., W, N), as residues (..., L, N).

    `array_path`: as in `compress_residues`.

    z = y Q' + 2^(bits-1) is 2^(bits-1) mod every q_i, so the lift floor(z / 2^bits) is
    (2^(bits-1) - (z mod 2^bits)) 2^-bits mod q_i; z mod 2^bits needs only Q' mod 2^bits.
    """
    bits = check_bits(bits)
    xp = Backend.for_array(y).xp
    tb = _tables(tuple(int(q) for q in moduli), bits)
    w = word_count(bits)
    if y.shape[-2] != w:
        raise ValueError(f"{y.shape[-2]} words for {bits}-bit values (need {w})")
    if xp is np and not array_path:
        flat = np.ascontiguousarray(y).reshape(-1, w, y.shape[-1])
        res = np.empty((flat.shape[0], len(moduli), y.shape[-1]), dtype=np.uint32)
        if flat.size:
            low, hlf = np.array(tb.q_low, np.uint64), np.array(tb.half, np.uint64)
            _lift_kernel(
                flat, tb.q, low, hlf, tb.word_mod, tb.word_mod_sh, tb.half_mod, tb.inv_2k,
                tb.inv_2k_sh, _top_mask(bits), res,
            )  # fmt: skip
        return res.reshape(y.shape[:-2] + (len(moduli), y.shape[-1]))
    y64 = y.astype(xp.uint64)
    acc = xp.zeros(y.shape, dtype=xp.uint64)
    for j in range(w):
        acc[..., j, :] += np.uint64(tb.half[j])
    for u in range(w):
        for v in range(w - u):
            c = tb.q_low[v]
            if c:
                p = y64[..., u, :] * np.uint64(c)
                acc[..., u + v, :] += p & _M32
                if u + v + 1 < w:
                    acc[..., u + v + 1, :] += p >> _S32
    rem = _carry(xp, acc, bits).astype(xp.uint64)  # z mod 2^bits
    q = xp.asarray(tb.q)
    out = xp.empty(y.shape[:-2] + (len(moduli), y.shape[-1]), dtype=xp.uint32)
    for i in range(len(moduli)):
        qi = q[i]
        r = xp.zeros(y.shape[:-2] + (y.shape[-1],), dtype=xp.uint64)
        for j in range(w):
            r += (rem[..., j, :] * np.uint64(tb.word_mod[i, j])) % qi
        r %= qi
        d = (np.uint64(tb.half_mod[i]) + qi - r) % qi
        out[..., i, :] = ((d * np.uint64(tb.inv_2k[i])) % qi).astype(xp.uint32)
    return out


def add_words(a: Any, b: Any, bits: int) -> Any:
    """(a + b) mod 2^bits of two word arrays of the same shape."""
    xp = Backend.for_array(a).xp
    if a.shape != b.shape:
        raise ValueError(f"compressed values of shapes {a.shape} and {b.shape}")
    return _carry(xp, a.astype(xp.uint64) + b.astype(xp.uint64), bits)
