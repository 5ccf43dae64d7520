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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpubfv.backend import Backend
from gpubfv.ciphertext import Ciphertext
from gpubfv.mhe.rounding import (
    MAX_COMPRESSED_BITS,
    ROUND_SLACK,
    add_words,
    check_bits,
    compress_residues,
    lift_words,
    word_count,
    word_widths,
)
from gpubfv.mhe.shares import DecryptionShare, ShareMismatch
from gpubfv.params import Parameters


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
        check_bits(self.bits)
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
        check_bits(self.bits)
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


def open_positions(ctx: Any, level: int, bits: int, c0: Any, shares: Any) -> Any:
    """Decrypt coefficient positions of a compressed ciphertext batch: ``c0`` words (W, M) of
    the summed compressed c0 and ``shares`` words (W, M) of the summed compressed decryption
    shares at the same M positions (any M: a slice of the batch's coefficients, in any order).

    Each is lifted back to residues mod Q' (`lift_words`), they are added, and the level's
    `ScaleRoundToT` rounds t (c0 + sum h_i) / Q' coefficient by coefficient: the plaintext's
    coefficients at those positions, uint64 (M,) or wide words (W_t, M). Every step is the
    whole-ciphertext decryption's (`CollectiveDecrypt.decrypt` of `CompressedCiphertext.lift`
    with the lifted share), restricted to the positions; the caller checks that the shares
    belong to this c1 and that every expected peer's share is in the sum."""
    moduli = _level_moduli(ctx.params, level)
    w = word_count(bits)
    if c0.ndim != 2 or c0.shape != shares.shape or c0.shape[0] != w:
        raise ValueError(f"c0 {c0.shape} and shares {shares.shape}: need ({w}, M) words each")
    xp = Backend.for_array(c0).xp
    q = xp.asarray(np.array(moduli, dtype=np.uint64))[:, None]
    phase = (lift_words(c0, moduli, bits).astype(xp.uint64) + lift_words(shares, moduli, bits)) % q
    return ctx.decrypt_scaler(level)(phase.astype(xp.uint32))


__all__ = [
    "MAX_COMPRESSED_BITS",
    "ROUND_SLACK",
    "CompressedCiphertext",
    "CompressedDecryptionShare",
    "add_words",
    "compress_residues",
    "lift_words",
    "open_positions",
    "word_count",
    "word_widths",
]
