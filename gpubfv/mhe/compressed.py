"""Compressed wire forms: c0 of a ciphertext and decryption shares rounded to `bits` bits.

A value x mod Q' (Q' = q_1...q_level, the wire modulus) travels as

    y = round(x * 2^bits / Q') mod 2^bits                 (`compress_residues`)

and is lifted back as x~ = round(y * Q' / 2^bits) mod Q' (`lift_words`). Both maps are
well defined modulo their moduli, and compression is additive up to rounding: the sum mod 2^bits
of the compressed values of x_1..x_M is (sum x_j) * 2^bits / Q' mod 2^bits up to M roundings.
So compressed c0 parts and compressed shares are summed in Z_2^bits along the reduce-scatter
(`CompressedCiphertext.add`, `CompressedDecryptionShare.combine`): every peer's c0 and every
peer's share is rounded once, whatever the topology, and only the owner of a chunk lifts.

Error (derived in `gpubfv.mhe.noise.rounding_bound`): one compression is within
1/2 + ROUND_SLACK units of 2^-bits * Q' of x (the fractional part is summed in float64, see
`compress_residues`), a lift within 1/2 of y * Q' / 2^bits.

Why it costs no security: c0 is part of a public ciphertext and its compression is a public
function of it; a compressed share is a function of an already smudged share (post-processing
cannot increase a statistical distance or a Renyi divergence). c1 is not compressed: its
rounding error would be multiplied by the secret key s and would need its own smudging.

Values are little-endian 32-bit words, shape (..., W, N), W = ceil(bits / 32), the top word
holding bits - 32 (W - 1) bits. Arithmetic is exact integer work in uint64 (no big integers),
on whatever array module holds the data (numpy or CuPy).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange, uint64

from gpubfv.backend import Backend
from gpubfv.ciphertext import Ciphertext
from gpubfv.mhe.shares import DecryptionShare, ShareMismatch
from gpubfv.params import Parameters

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


def _check_bits(bits: Any) -> int:
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


def compress_residues(x: Any, moduli: tuple[int, ...], bits: int) -> Any:
    """round(x * 2^bits / Q') mod 2^bits of residues x (..., L, N): words (..., W, N).

    With a_i = x_i (Q'/q_i)^-1 mod q_i, x + v Q' = sum a_i Q'/q_i for an integer v, so
    x 2^bits / Q' = sum a_i 2^bits / q_i (mod 2^bits). Each term splits exactly into
    a_i floor(2^bits/q_i) + floor(a_i r_i / q_i) + (a_i r_i mod q_i) / q_i, r_i = 2^bits mod q_i;
    only the last fractions are summed in float64 before the one rounding.
    """
    bits = _check_bits(bits)
    xp = Backend.for_array(x).xp
    tb = _tables(tuple(int(q) for q in moduli), bits)
    if x.shape[-2] != len(moduli):
        raise ValueError(f"residues of {x.shape[-2]} limbs over {len(moduli)} moduli")
    w = word_count(bits)
    if xp is np:
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


def lift_words(y: Any, moduli: tuple[int, ...], bits: int) -> Any:
    """round(y * Q' / 2^bits) mod Q' of words y (..., W, N), as residues (..., L, N).

    z = y Q' + 2^(bits-1) is 2^(bits-1) mod every q_i, so the lift floor(z / 2^bits) is
    (2^(bits-1) - (z mod 2^bits)) 2^-bits mod q_i; z mod 2^bits needs only Q' mod 2^bits.
    """
    bits = _check_bits(bits)
    xp = Backend.for_array(y).xp
    tb = _tables(tuple(int(q) for q in moduli), bits)
    w = word_count(bits)
    if y.shape[-2] != w:
        raise ValueError(f"{y.shape[-2]} words for {bits}-bit values (need {w})")
    if xp is np:
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


def _level_moduli(params: Parameters, level: int) -> tuple[int, ...]:
    return tuple(int(q) for q in params.q[:level])


@dataclass(frozen=True, eq=False)
class CompressedCiphertext:
    """A size-2 ciphertext at `level` whose c0 is rounded to `bits` bits; c1 stays full.

    `c0`: words (*batch, W, N) of round(c0 * 2^bits / Q') mod 2^bits; `c1`: residues
    (*batch, level, N), coefficient domain. Sums stay compressed (`add`); `lift` gives the
    ciphertext back with c0 within the rounding bound of the original sum.
    """

    params: Parameters
    level: int
    bits: int
    c0: Any
    c1: Any

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        n, w = self.params.n, word_count(self.bits)
        if not 1 <= self.level <= len(self.params.q):
            raise ValueError(f"level {self.level} outside 1..{len(self.params.q)}")
        if tuple(self.c0.shape[-2:]) != (w, n) or tuple(self.c1.shape[-2:]) != (self.level, n):
            raise ValueError(
                f"compressed ciphertext parts of shapes {self.c0.shape}, {self.c1.shape} for "
                f"{self.bits} bits, level {self.level}, N={n}"
            )
        if tuple(self.c0.shape[:-2]) != tuple(self.c1.shape[:-2]):
            raise ValueError("c0 and c1 of different batch shapes")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch dimensions (one ciphertext per row)."""
        return tuple(self.c1.shape[:-2])

    @classmethod
    def compress(cls, ct: Ciphertext, bits: int) -> CompressedCiphertext:
        """Round c0 of a size-2 ciphertext to `bits` bits (a public function of `ct`)."""
        if ct.data.shape[-3] != 2:
            raise ValueError("only size-2 ciphertexts are compressed (relinearize first)")
        c0 = compress_residues(ct.data[..., 0, :, :], _level_moduli(ct.params, ct.level), bits)
        xp = Backend.for_array(ct.data).xp
        return cls(ct.params, ct.level, bits, c0, xp.ascontiguousarray(ct.data[..., 1, :, :]))

    def _check_same(self, other: CompressedCiphertext) -> None:
        if not isinstance(other, CompressedCiphertext):
            raise TypeError(f"cannot add a {type(other).__name__} to a CompressedCiphertext")
        if self.params.fingerprint != other.params.fingerprint:
            raise ValueError("compressed ciphertexts of different parameters")
        if (self.level, self.bits, self.c1.shape) != (other.level, other.bits, other.c1.shape):
            raise ValueError(
                f"compressed ciphertexts differ: level/bits/shape {self.level}/{self.bits}/"
                f"{self.c1.shape} vs {other.level}/{other.bits}/{other.c1.shape}"
            )

    def add(self, other: CompressedCiphertext) -> CompressedCiphertext:
        """The homomorphic sum: c0 in Z_2^bits (no new rounding), c1 mod Q'."""
        self._check_same(other)
        xp = Backend.for_array(self.c1).xp
        q = xp.asarray(np.array(_level_moduli(self.params, self.level), dtype=np.uint64))[:, None]
        c1 = ((self.c1.astype(xp.uint64) + other.c1) % q).astype(xp.uint32)
        return CompressedCiphertext(
            self.params, self.level, self.bits, add_words(self.c0, other.c0, self.bits), c1
        )

    def c1_ciphertext(self) -> Ciphertext:
        """The ciphertext with c0 = 0: all a decryption share depends on (c1 and its digest)."""
        xp = Backend.for_array(self.c1).xp
        data = xp.zeros(self.batch_shape + (2, self.level, self.params.n), dtype=xp.uint32)
        data[..., 1, :, :] = self.c1
        return Ciphertext(self.params, data)

    def lift(self) -> Ciphertext:
        """The ciphertext with c0 lifted back to residues mod Q' (one more rounding, <= 1/2)."""
        xp = Backend.for_array(self.c1).xp
        c0 = lift_words(self.c0, _level_moduli(self.params, self.level), self.bits)
        return Ciphertext(self.params, xp.ascontiguousarray(xp.stack([c0, self.c1], axis=-3)))


@dataclass(frozen=True, kw_only=True, eq=False)
class CompressedDecryptionShare:
    """A (sum of) decryption share(s) rounded to `bits` bits: words (*batch, W, N).

    Carries what its `DecryptionShare` carried (digest of the c1 rows, senders, active set,
    level), so that combining checks the same things and `lift` gives a share the collective
    decryptor accepts.
    """

    params: Parameters
    digest: bytes
    senders: frozenset[int]
    level: int
    bits: int
    data: Any
    active_set: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if not 1 <= self.level <= len(self.params.q):
            raise ValueError(f"level {self.level} outside 1..{len(self.params.q)}")
        if tuple(self.data.shape[-2:]) != (word_count(self.bits), self.params.n):
            raise ValueError(f"compressed share of shape {self.data.shape} for {self.bits} bits")

    @classmethod
    def compress(cls, share: DecryptionShare, bits: int) -> CompressedDecryptionShare:
        """Round a (smudged) share to `bits` bits: post-processing of the smudged share."""
        if type(share) is not DecryptionShare:
            raise TypeError(f"only DecryptionShare is compressed, not {type(share).__name__}")
        data = compress_residues(share.data, _level_moduli(share.params, share.level), bits)
        return cls(
            params=share.params,
            digest=share.digest,
            senders=share.senders,
            level=share.level,
            bits=bits,
            data=data,
            active_set=share.active_set,
        )

    def combine(self, other: CompressedDecryptionShare) -> CompressedDecryptionShare:
        """The sum of two disjoint sets of shares of the same ciphertext rows, still compressed."""
        if not isinstance(other, CompressedDecryptionShare):
            raise TypeError(f"a {type(other).__name__} cannot combine with a compressed share")
        if self.params.fingerprint != other.params.fingerprint:
            raise ShareMismatch("shares differ in parameters (fingerprint)")
        for name in ("digest", "level", "bits", "active_set"):
            if getattr(self, name) != getattr(other, name):
                raise ShareMismatch(f"compressed shares differ in {name}")
        if self.data.shape != other.data.shape:
            raise ShareMismatch(f"shares differ in shape: {self.data.shape} vs {other.data.shape}")
        overlap = self.senders & other.senders
        if overlap:
            raise ShareMismatch(f"share of peer(s) {sorted(overlap)} counted twice")
        return CompressedDecryptionShare(
            params=self.params,
            digest=self.digest,
            senders=self.senders | other.senders,
            level=self.level,
            bits=self.bits,
            data=add_words(self.data, other.data, self.bits),
            active_set=self.active_set,
        )

    def lift(self) -> DecryptionShare:
        """The share lifted back to residues mod Q' (one more rounding, <= 1/2)."""
        data = lift_words(self.data, _level_moduli(self.params, self.level), self.bits)
        return DecryptionShare(
            params=self.params,
            digest=self.digest,
            senders=self.senders,
            data=data,
            active_set=self.active_set,
            level=self.level,
        )


__all__ = [
    "MAX_COMPRESSED_BITS",
    "ROUND_SLACK",
    "CompressedCiphertext",
    "CompressedDecryptionShare",
    "add_words",
    "compress_residues",
    "lift_words",
    "word_count",
    "word_widths",
]
