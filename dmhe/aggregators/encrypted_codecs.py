"""Wire codecs of :class:`~dmhe.aggregators.encrypted.EncryptedAggregator`'s round.

The whole-ciphertext chunks of a threshold round (the others run on coefficient slices,
:mod:`dmhe.aggregators.encrypted_slices`). Ciphertext chunks travel as gpubfv's
CompressedCiphertext frames (c0 rounded to the plan's ``compressed_bits``, c1 full), decryption
shares as CompressedDecryptionShare frames, the opened sums bit-packed at the sub-slot width.
Compressed parts combine by addition in Z_2^bits: no rounding is added on the way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dmhe.collectives import Codec
from gpubfv.mhe.compressed import CompressedCiphertext, CompressedDecryptionShare, word_count
from gpubfv.mhe.shares import batch_digest
from gpubfv.serialization import (
    from_bytes,
    pack_bits,
    to_bytes,
    unpack_bits,
)

if TYPE_CHECKING:
    from dmhe.aggregators.encrypted import EncryptedAggregator

__all__ = ["ct_codec", "empty_share", "share_codec", "sums_codec"]


def ct_codec(agg: EncryptedAggregator, sizes: list[int]) -> Codec[CompressedCiphertext]:
    """Compressed ciphertext chunks (wire type 42: c0 at ``bits``, c1 full), checked
    against the chunk's expected batch; combining adds them without a new rounding.

    An empty chunk (no ciphertext rows: K > ciphertexts) travels as zero bytes and decodes,
    only where the chunk is expected empty, to one shared empty ciphertext; two empties
    combine to it without arithmetic. No encoding work per empty chunk, on any topology.
    """
    empty = _empty_ct(agg)

    def encode(ct: CompressedCiphertext) -> bytes:
        return b"" if ct.batch_shape == (0,) else to_bytes(ct)

    def decode(b: bytes, i: int) -> CompressedCiphertext:
        if not b:
            if sizes[i]:
                raise ValueError(f"chunk {i}: empty frame for {sizes[i]} ciphertexts")
            return empty
        ct = from_bytes(agg.ctx, b, CompressedCiphertext)
        if (ct.batch_shape, ct.level, ct.bits) != ((sizes[i],), agg.level, agg.bits):
            raise ValueError(f"chunk {i}: {ct.batch_shape} at level {ct.level}/{ct.bits}")
        return ct

    def combine(a: CompressedCiphertext, b: CompressedCiphertext) -> CompressedCiphertext:
        if a.batch_shape == (0,) and b.batch_shape == (0,):
            return empty
        return a.add(b)

    return Codec(encode=encode, decode=decode, combine=combine)


def _empty_ct(agg: EncryptedAggregator) -> CompressedCiphertext:
    """The chunk of no ciphertexts at the aggregator's level and bits."""
    xp = agg.backend.xp
    c0 = xp.zeros((0, word_count(agg.bits), agg.params.n), dtype=xp.uint32)
    c1 = xp.zeros((0, agg.level, agg.params.n), dtype=xp.uint32)
    return CompressedCiphertext(agg.params, agg.level, agg.bits, c0, c1)


def share_codec(agg: EncryptedAggregator) -> Codec[CompressedDecryptionShare]:
    """Compressed decryption shares (wire type 43); combining sums them in Z_2^bits.

    A share of an empty chunk (no ciphertext rows, K > ciphertexts) carries nothing to sum:
    it travels as zero bytes (its sender set alone would outgrow the ids-per-byte bound of the
    share frame), and empty shares combine to the one canonical empty share (no senders), so
    every topology ends with the same bytes; a non-empty share cannot be replaced by one
    (combining differs in shape).
    """

    none = empty_share(agg)

    def empty() -> CompressedDecryptionShare:
        return none

    def encode(share: CompressedDecryptionShare) -> bytes:
        return b"" if share.data.size == 0 else to_bytes(share)

    def decode(b: bytes, _i: int) -> CompressedDecryptionShare:
        if not b:
            return empty()
        share = from_bytes(agg.ctx, b, CompressedDecryptionShare)
        if (share.level, share.bits) != (agg.level, agg.bits):
            raise ValueError(f"share at level {share.level}/{share.bits} bits")
        return share

    def combine(
        a: CompressedDecryptionShare, b: CompressedDecryptionShare
    ) -> CompressedDecryptionShare:
        if a.data.size == 0 and b.data.size == 0:
            return empty()  # canonical: the same on every topology
        return a.combine(b)

    return Codec(encode=encode, decode=decode, combine=combine)


def empty_share(agg: EncryptedAggregator) -> CompressedDecryptionShare:
    """The canonical share of an empty chunk (no rows, no senders): what the share codec
    decodes zero bytes to and what empty shares combine to (built once per codec: at K = 1000
    a peer meets about K of them per round)."""
    data = np.zeros((0, word_count(agg.bits), agg.params.n), dtype=np.uint32)
    return CompressedDecryptionShare(
        params=agg.params, digest=batch_digest([], (0,)), senders=frozenset(),
        level=agg.level, bits=agg.bits, data=agg.backend.asarray(data),
    )  # fmt: skip


def sums_codec(agg: EncryptedAggregator, sizes: list[int]) -> Codec[np.ndarray]:
    """Decrypted packed chunks travel at exactly the sub-slot width, not as int64."""

    def encode(a: np.ndarray) -> bytes:
        return pack_bits(a.astype(np.uint32), (agg.width,)) if a.size else b""

    def decode(b: bytes, i: int) -> np.ndarray:
        width = sizes[i] * agg.encoder.slots
        if not width:
            return np.zeros((1, 0), dtype=np.uint64)
        return unpack_bits(b, (agg.width,), width).astype(np.uint64)

    return Codec(encode=encode, decode=decode)
