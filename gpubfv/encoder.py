"""Encoders: integer vectors <-> plaintext polynomials.

- `BatchEncoder`: N slots as a 2 x N/2 matrix (SIMD; needs t = 1 mod 2N); rotations act on rows.
- `CoefficientEncoder`: values as polynomial coefficients (any prime t; enough for sums and
  plaintext scaling), with optional packing of several non-negative sub-values per coefficient.
- `FixedPointEncoder`: reals -> round(clip(x) * 2^f) over either integer encoder. The encoding
  error is at most 2^-(f+1) per value (one rounding); values beyond the clip bound are refused.

The integer encoders take integer arrays only (numpy/CuPy integer dtypes, or lists of Python
ints that fit int64). Any floating-point input is refused with `EncodingError`, integer-valued
or not (1.0 as well as 1.7, NaN, inf): a float reaching an integer encoder is a missing
quantisation step, and silently truncating or rounding it would hide that. Reals go through
`FixedPointEncoder`, or are converted by the caller (`np.rint(x).astype(np.int64)`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpubfv.ciphertext import Plaintext, check_plaintext
from gpubfv.context import Context, require_context
from gpubfv.ring.basis import RNSBasis


class EncodingError(ValueError):
    """Values that cannot be encoded (wrong type, out of range, too many)."""


def _as_integers(values: Any, xp: Any) -> Any:
    """`values` as an integer array of `xp`; floats (of any value), bools and objects refused."""
    v = xp.asarray(values)
    if v.dtype.kind not in "iu":
        hint = " (reals: use FixedPointEncoder)" if v.dtype.kind in "fc" else ""
        raise EncodingError(f"integer values required, got dtype {v.dtype}{hint}")
    if v.ndim == 0:
        raise EncodingError("expected a vector of values (..., count), got a scalar")
    return v


def _to_mod_t(values: Any, t: int, xp: Any) -> Any:
    """Signed integers |v| <= (t-1)/2 (or non-negative v < t) -> uint64 residues in [0, t)."""
    v = _as_integers(values, xp)
    if v.size:
        lo, hi = int(v.min()), int(v.max())
        if lo < -((t - 1) // 2) or hi >= t:
            raise EncodingError(f"values in [{lo}, {hi}] do not fit plaintext modulus t={t}")
    v64 = v.astype(np.int64)
    return xp.where(v64 < 0, v64 + np.int64(t), v64).astype(np.uint64)


def _from_mod_t(data: Any, t: int, signed: bool, xp: Any) -> Any:
    d = data.astype(np.int64)
    if signed:
        d = xp.where(d > np.int64(t // 2), d - np.int64(t), d)
    return d


# ---- wide t = 2^k: coefficients as W little-endian 32-bit words (see Plaintext) ------------
_M32 = np.uint64(0xFFFFFFFF)


def _top_mask(params: Any) -> np.uint64:
    return np.uint64((1 << (params.t_log2 - 32 * (params.t_words - 1))) - 1)


def _wide_from_int64(v: Any, params: Any, xp: Any) -> Any:
    """int64 (..., N) -> uint32 words (..., W, N) of v mod 2^k (two's complement extended)."""
    w = params.t_words
    signed = v.dtype.kind == "i"
    u = v.astype(np.int64).view(np.uint64) if signed else v.astype(np.uint64)
    out = xp.empty(v.shape[:-1] + (w, v.shape[-1]), dtype=np.uint64)
    out[..., 0, :] = u & _M32
    out[..., 1, :] = u >> np.uint64(32)
    if w > 2:
        neg = v < 0 if signed else xp.zeros(v.shape, dtype=bool)
        out[..., 2:, :] = xp.where(neg, _M32, np.uint64(0))[..., None, :]
    out[..., w - 1, :] &= _top_mask(params)
    return out.astype(np.uint32)


def _wide_to_int64(words: Any, params: Any, signed: bool, xp: Any) -> Any:
    """uint32 words (..., W, N) -> int64 (centered in (-t/2, t/2] when `signed`); a value that
    does not fit int64 raises EncodingError (decode it packed, or keep it below 2^63)."""
    k, w = params.t_log2, params.t_words
    d = words.astype(np.uint64)
    lo = d[..., 0, :] | (d[..., 1, :] << np.uint64(32))
    high = d[..., 2:, :]
    top_bit = (d[..., w - 1, :] >> np.uint64((k - 1) - 32 * (w - 1))) & np.uint64(1)
    if signed:
        below = d.copy()
        below[..., w - 1, :] &= np.uint64((1 << ((k - 1) - 32 * (w - 1))) - 1)
        neg = (top_bit == 1) & below.any(axis=-2)  # w > 2^(k-1)
    else:
        neg = xp.zeros(lo.shape, dtype=bool)
    if k < 64:  # lo holds all k bits; a negative value is lo - 2^k, within int64
        val = xp.where(neg, lo - np.uint64(1 << k), lo).view(np.int64)
        fits = neg | (lo < np.uint64(1 << 63))
    else:
        full = np.uint64(0xFFFFFFFF)
        ones = high == full
        if w > 2:
            ones[..., -1, :] = high[..., -1, :] == _top_mask(params)
        all_ones = ones.all(axis=-2) if w > 2 else xp.ones(lo.shape, dtype=bool)
        zero = ~high.any(axis=-2) if w > 2 else xp.ones(lo.shape, dtype=bool)
        if k == 64:
            all_ones = xp.ones(lo.shape, dtype=bool)
        hi_bit = lo >= np.uint64(1 << 63)
        fits = xp.where(neg, all_ones & hi_bit, zero & ~hi_bit)
        val = lo.view(np.int64)
    if lo.size and not bool(fits.all()):
        raise EncodingError(
            f"a coefficient mod 2^{k} does not fit int64; decode it as packed sub-values"
        )
    return val


def wide_negate(data: Any, params: Any, xp: Any) -> Any:
    """-m mod 2^k of wide plaintext words (..., W, N): two's complement across the words."""
    d = data.astype(np.uint64)
    out = xp.empty(d.shape, dtype=np.uint64)
    carry = xp.ones(d.shape[:-2] + d.shape[-1:], dtype=np.uint64)
    for a in range(params.t_words):
        s = (d[..., a, :] ^ _M32) + carry
        out[..., a, :] = s & _M32
        carry = s >> np.uint64(32)
    out[..., -1, :] &= _top_mask(params)
    return out.astype(np.uint32)


def _wide_pack(v: Any, pack: int, width: int, params: Any, backend: Any) -> Any:
    """Sub-values (..., count) in [0, 2^width) -> words (..., W, N) of sum_j v_j 2^(j width),
    sub-slot j of coefficient i taken from index j*N + i (missing entries are zero)."""
    xp = backend.xp
    batch, count = v.shape[:-1], v.shape[-1]
    flat = xp.ascontiguousarray(v.reshape(-1, count).astype(np.int64, copy=False))
    out = xp.empty((flat.shape[0], params.t_words, params.n), dtype=np.uint32)
    backend.widet.wide_pack(flat, pack, width, out)
    return out.reshape(batch + (params.t_words, params.n))


def _wide_unpack(words: Any, pack: int, width: int, backend: Any) -> Any:
    """Words (..., W, N) -> sub-values int64 (..., pack * N), sub-slot j at [j*N, (j+1)*N)."""
    xp = backend.xp
    w, n = words.shape[-2:]
    flat = xp.ascontiguousarray(words.reshape(-1, w, n))
    out = xp.empty((flat.shape[0], pack * n), dtype=np.int64)
    backend.widet.wide_unpack(flat, pack, width, out)
    return out.reshape(words.shape[:-2] + (pack * n,))


class BatchEncoder:
    """SIMD encoding: `BatchEncoder(ctx)`; N integer slots as a 2 x N/2 matrix.

    Needs a batching parameter set (t = 1 mod 2N).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = require_context(ctx, "BatchEncoder")
        params = self.params = self.ctx.params
        self.backend = self.ctx.backend
        if not params.batching:
            raise EncodingError("BatchEncoder needs a batching parameter set (t = 1 mod 2N)")
        n = params.n
        self.slots = n
        self.tb = RNSBasis([params.t], n, self.backend)
        log_n = n.bit_length() - 1
        rev = np.array([int(f"{i:0{log_n}b}"[::-1], 2) if log_n else 0 for i in range(n)])
        index = np.empty(n, dtype=np.int64)
        g = 1
        half = n // 2
        for i in range(half):
            e0, e1 = g, (2 * n - g) % (2 * n)
            index[i] = rev[(e0 - 1) // 2]
            index[half + i] = rev[(e1 - 1) // 2]
            g = g * 3 % (2 * n)
        self.index_map = self.backend.xp.asarray(index)

    def encode(self, values: Any) -> Plaintext:
        """values (..., N) integers, signed (|v| <= (t-1)/2) or in [0, t)."""
        xp = self.backend.xp
        v = _to_mod_t(values, self.params.t, xp)
        if v.shape[-1] != self.slots:
            raise EncodingError(f"expected {self.slots} slots, got {v.shape[-1]}")
        batch = v.shape[:-1]
        ev = xp.empty(batch + (1, self.slots), dtype=np.uint32)
        ev[..., 0, self.index_map] = v.astype(np.uint32)
        self.tb.intt(ev, inplace=True)
        return Plaintext(self.params, ev[..., 0, :].astype(np.uint64))

    def decode(self, pt: Plaintext, signed: bool = True) -> Any:
        """Slots as int64: centered in (-t/2, t/2] when `signed`, else in [0, t)."""
        check_plaintext(self.params, pt)
        xp = self.backend.xp
        c = xp.ascontiguousarray(pt.data.astype(np.uint32)[..., None, :])
        self.tb.ntt(c, inplace=True)
        slots = c[..., 0, :][..., self.index_map].astype(np.uint64)
        return _from_mod_t(slots, self.params.t, signed, xp)


class CoefficientEncoder:
    """Values as coefficients; `pack` > 1 packs several non-negative sub-values per coefficient.

    With packing, each coefficient holds sum_j v_j * 2^(j*width) and `width` must leave room for
    every sum the plaintext will undergo (caller's headroom): the whole packed value must stay
    below t, checked here. A wide t = 2^k (k > 61) takes up to k bits per coefficient (e.g. 8
    sub-values of 20 bits at t = 2^160); `pack=1` then encodes int64 values mod 2^k and decodes
    them centered (a coefficient that no longer fits int64 raises EncodingError).

    `CoefficientEncoder(ctx, pack=1, width=0)`.
    """

    def __init__(self, ctx: Context, *, pack: int = 1, width: int = 0) -> None:
        self.ctx = require_context(ctx, "CoefficientEncoder")
        params = self.params = self.ctx.params
        self.backend = self.ctx.backend
        if pack < 1:
            raise EncodingError("pack must be >= 1")
        if pack > 1 and (width < 1 or pack * width >= params.t.bit_length()):
            raise EncodingError(
                f"{pack} sub-values of {width} bits do not fit t of {params.t.bit_length()} bits"
            )
        if pack > 1 and width > 63:  # decode returns int64 sub-values
            raise EncodingError(f"sub-values of {width} bits do not fit int64 (at most 63)")
        self.pack, self.width = pack, width
        self.slots = params.n * pack

    def encode(self, values: Any) -> Plaintext:
        """values (..., count) integers, count <= slots; zero-padded to N coefficients."""
        xp = self.backend.xp
        v = _as_integers(values, xp)
        n = self.params.n
        if self.pack == 1:
            if v.shape[-1] > n:
                raise EncodingError(f"at most {n} values per plaintext")
            m = (
                _wide_from_int64(v, self.params, xp)
                if self.params.t_wide
                else _to_mod_t(v, self.params.t, xp)
            )
        else:
            if v.shape[-1] > self.slots:
                raise EncodingError(f"at most {self.slots} values per plaintext")
            if v.size and (int(v.min()) < 0 or int(v.max()) >= (1 << self.width)):  # before cast
                raise EncodingError(f"packed sub-values must lie in [0, 2^{self.width})")
            if self.params.t_wide:
                m = _wide_pack(v, self.pack, self.width, self.params, self.backend)
                return Plaintext(self.params, m)
            pad = self.slots - v.shape[-1]
            v = xp.concatenate(
                [v.astype(np.uint64), xp.zeros(v.shape[:-1] + (pad,), np.uint64)], -1
            )
            v = v.reshape(v.shape[:-1] + (self.pack, n))
            m = xp.zeros(v.shape[:-2] + (n,), dtype=np.uint64)
            for j in range(self.pack):
                m |= v[..., j, :] << np.uint64(j * self.width)
        if m.shape[-1] < n:
            m = xp.concatenate([m, xp.zeros(m.shape[:-1] + (n - m.shape[-1],), m.dtype)], -1)
        return Plaintext(self.params, m)

    def decode(self, pt: Plaintext, signed: bool = True) -> Any:
        """Coefficients as int64 (centered when `signed`); packed: the sub-values, unsigned."""
        check_plaintext(self.params, pt)
        xp = self.backend.xp
        if self.params.t_wide:
            if self.pack == 1:
                return _wide_to_int64(pt.data, self.params, signed, xp)
            return _wide_unpack(pt.data, self.pack, self.width, self.backend)
        if self.pack == 1:
            return _from_mod_t(pt.data, self.params.t, signed, xp)
        mask = np.uint64((1 << self.width) - 1)
        parts = [(pt.data >> np.uint64(j * self.width)) & mask for j in range(self.pack)]
        return xp.concatenate(parts, axis=-1).astype(np.int64)

    def unpack_positions(self, coeffs: Any) -> Any:
        """Sub-values (pack, M) int64, unsigned, of M plaintext coefficients given without their
        polynomial: uint64 (M,) for t < 2^61, words (W, M) for a wide t. Row j holds sub-slot j
        (with pack = 1 the coefficient itself in [0, t); a wide t needs a `width` for it), so
        for the N coefficients of one plaintext the rows joined are the packed `decode`."""
        xp = self.backend.xp
        if self.params.t_wide:
            words = xp.ascontiguousarray(coeffs, dtype=np.uint32)
            if words.ndim != 2 or words.shape[0] != self.params.t_words:
                raise EncodingError(f"wide coefficients of shape {words.shape}")
            if not self.width:
                raise EncodingError("a wide t without a sub-value width does not fit int64")
            return _wide_unpack(words, self.pack, self.width, self.backend).reshape(self.pack, -1)
        c = xp.asarray(coeffs, dtype=np.uint64)
        if c.ndim != 1:
            raise EncodingError(f"coefficients of shape {c.shape}: need (M,)")
        if self.pack == 1:
            return c.reshape(1, -1).astype(np.int64)
        mask = np.uint64((1 << self.width) - 1)
        parts = [(c >> np.uint64(j * self.width)) & mask for j in range(self.pack)]
        return xp.stack(parts).astype(np.int64)


class FixedPointEncoder:
    """Reals <-> integers round(x * 2^f) over an integer encoder; |x| must not exceed `clip`.

    `FixedPointEncoder(ctx, scale_bits, clip, inner=None)`: `inner` is the integer encoder
    underneath (default: a `BatchEncoder` on a batching set, else a `CoefficientEncoder`); it
    must be built on the same Context's parameters.
    """

    def __init__(
        self,
        ctx: Context,
        scale_bits: int,
        clip: float,
        inner: BatchEncoder | CoefficientEncoder | None = None,
    ) -> None:
        ctx = require_context(ctx, "FixedPointEncoder")
        if inner is None:
            inner = BatchEncoder(ctx) if ctx.params.batching else CoefficientEncoder(ctx)
        elif not isinstance(inner, (BatchEncoder, CoefficientEncoder)):
            raise TypeError(f"inner must be an integer encoder, got {type(inner).__name__}")
        ctx.check(inner, "inner encoder")
        if isinstance(inner, CoefficientEncoder) and inner.pack > 1:
            raise EncodingError("packed sub-values are unsigned; fixed point needs pack=1")
        if scale_bits < 0:
            raise EncodingError(f"scale_bits must be >= 0, got {scale_bits}")
        if not (math.isfinite(clip) and clip > 0):
            raise EncodingError(f"clip must be a positive finite bound, got {clip}")
        self.ctx = ctx
        self.inner = inner
        self.scale_bits = scale_bits
        self.clip = float(clip)
        t = inner.params.t
        if self.clip * 2.0**scale_bits >= t / 2:
            raise EncodingError(
                f"clip {clip} at scale 2^{scale_bits} does not fit t={t} (need clip*2^f < t/2)"
            )

    @property
    def max_error(self) -> float:
        """Largest encoding error per value, 2^-(f+1)."""
        return 2.0 ** -(self.scale_bits + 1)

    def encode(self, x: Any) -> Plaintext:
        """Reals (..., count), |x| <= clip, finite -> round(x * 2^f) encoded by `inner`."""
        xp = self.inner.backend.xp
        x = xp.asarray(x, dtype=np.float64)
        if x.size and not bool(xp.isfinite(x).all()):
            raise EncodingError("NaN or infinite values cannot be encoded")
        if x.size and float(xp.abs(x).max()) > self.clip:
            raise EncodingError(f"|x| exceeds the clip bound {self.clip}")
        return self.inner.encode(xp.rint(x * 2.0**self.scale_bits).astype(np.int64))

    def decode(self, pt: Plaintext) -> Any:
        """float64 values, within `max_error` of what was encoded (while no wrap-around)."""
        return self.inner.decode(pt, signed=True).astype(np.float64) / 2.0**self.scale_bits
