"""The encrypted round on coefficient slices (every round without t < K threshold keys).

Every pass of the round is coefficient-wise: c0 and c1 add coefficient by coefficient, a
decryption share of a ciphertext is a function of its whole c1 but shares add coefficient by
coefficient, and decryption (lift, add, t/Q' rounding, unpacking) is per coefficient
(:func:`gpubfv.mhe.compressed.open_positions`). So the P = ciphertexts x N coefficient
positions of the whole batch are cut into K chunks of P/K positions (:func:`even_offsets`),
whatever the number of ciphertexts: every chunk is the same size, and a log-depth topology
moves exactly the ring's bytes (with whole-ciphertext chunks, K > ciphertexts leaves most
chunks empty and Bruck's all-gathers re-send the few full ones up to ceil(log2 K) times).

Per peer, on :class:`~dmhe.recordbuffer.RecordBuffer` s (rows bit-packed at their widths):

1. the compressed ciphertext batch as rows (c0 words at the compressed widths, then c1
   residues at the moduli's widths) x P; reduce-scatter folding c0 in Z_2^bits and c1 mod q_i;
2. all-gather of the c1 rows of the own chunk: every peer rebuilds the aggregated c1;
3. the peer's smudged decryption share of the whole batch (its journal refuses a second share
   of any c1 row, as on whole ciphertexts), compressed, as rows x P with one header column per
   chunk; reduce-scatter in Z_2^bits. The header is the share's c1 digest (mod 2^bits), so the
   owner's chunk must end with K times its own digest: a peer whose c1 differs is caught;
4. the owner opens its positions and all-gathers the packed sub-values (rows of ``width``
   bits), which every peer reorders into the encoder's order.

Every peer in every chunk exactly once is the schedule's property (as for the ciphertext sums);
the senders are not carried. The threshold round keeps whole-ciphertext chunks
(:mod:`dmhe.aggregators.encrypted_threshold`): its decryptors need c0 of every chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dmhe.collectives import all_gather_records, reduce_scatter_records
from dmhe.recordbuffer import RecordBuffer, RowCodec, even_offsets
from dmhe.transport import Transport
from gpubfv import Ciphertext
from gpubfv.mhe.compressed import (
    CompressedDecryptionShare,
    add_words,
    open_positions,
    word_count,
    word_widths,
)
from gpubfv.mhe.shares import ShareMismatch
from gpubfv.serialization import SerializationError, bits_size, pack_bits, unpack_bits

if TYPE_CHECKING:
    from dmhe.aggregators.encrypted import EncryptedAggregator

__all__ = ["SliceLayout", "SliceRound", "bit_rows", "slice_round"]


def bit_rows(widths: tuple[int, ...]) -> RowCodec:
    """Rows bit-packed at ``widths`` (gpubfv's canonical bit packing: every value below
    2^width, zero padding to a whole byte per row of a span, refused otherwise)."""

    def unpack(buf: memoryview, m: int) -> np.ndarray:
        try:
            return unpack_bits(buf, widths, m)
        except SerializationError as e:
            raise ValueError(str(e)) from None

    return RowCodec(
        len(widths), lambda a: pack_bits(a, widths), unpack, lambda m: bits_size(widths, m)
    )


class SliceLayout:
    """Row widths, chunk offsets and folds of one (aggregator, ciphertexts, K)."""

    def __init__(self, agg: EncryptedAggregator, n_ct: int, k: int) -> None:
        params, level, bits = agg.params, agg.level, agg.bits
        self.n_ct, self.n, self.k, self.bits = n_ct, params.n, k, bits
        self.w = word_count(bits)
        self.q = np.array([int(q) for q in params.q[:level]], dtype=np.uint64)[:, None]
        self.word_widths = tuple(word_widths(bits))
        self.c1_widths = tuple(int(q).bit_length() for q in params.q[:level])
        self.ct_widths = self.word_widths + self.c1_widths
        # one sub-value per row of <= 32 bits: a wider sub-value takes a low and a high row
        self.split = agg.width > 32
        sub = (32, agg.width - 32) if self.split else (agg.width,)
        self.plain_widths = sub * agg.encoder.pack
        self.ct_rows, self.c1_rows = bit_rows(self.ct_widths), bit_rows(self.c1_widths)
        self.word_rows, self.plain_rows = bit_rows(self.word_widths), bit_rows(self.plain_widths)
        self.positions = n_ct * params.n
        self.offsets = even_offsets(self.positions, k)
        self.share_offsets = self.offsets + np.arange(k + 1)  # a header column per chunk

    def fold_ct(self, held: np.ndarray, arrived: np.ndarray) -> None:
        """c0 words added in Z_2^bits, c1 residues mod q_i (refused unless below q_i)."""
        w, c1 = self.w, arrived[self.w :]
        if bool((c1 >= self.q).any()):
            raise ValueError("a c1 residue is not below its modulus")
        held[w:] = ((held[w:].astype(np.uint64) + c1) % self.q).astype(np.uint32)
        held[:w] = add_words(held[:w], arrived[:w], self.bits)

    def fold_words(self, held: np.ndarray, arrived: np.ndarray) -> None:
        """Compressed share words added in Z_2^bits (the header column too)."""
        held[:] = add_words(held, arrived, self.bits)

    def header(self, digest: bytes, times: int = 1) -> np.ndarray:
        """``times`` x the digest mod 2^bits, as a (W, 1) word column."""
        d = (int.from_bytes(digest, "little") * times) % (1 << self.bits)
        return np.array([[(d >> (32 * j)) & 0xFFFFFFFF] for j in range(self.w)], np.uint32)

    def to_positions(self, a: Any) -> np.ndarray:
        """(n_ct, R, N) -> (R, P): position p = ciphertext * N + coefficient."""
        return np.ascontiguousarray(np.asarray(a).transpose(1, 0, 2)).reshape(a.shape[1], -1)

    def from_positions(self, a: np.ndarray) -> np.ndarray:
        """(R, P) -> (n_ct, R, N)."""
        rows = a.shape[0]
        return np.ascontiguousarray(a.reshape(rows, self.n_ct, self.n).transpose(1, 0, 2))


def _layout(agg: EncryptedAggregator, n_ct: int, k: int) -> SliceLayout:
    """The aggregator's layout for ``n_ct`` ciphertexts and K peers, built once."""
    lay = agg.slice_layouts.get((n_ct, k))
    if lay is None:
        lay = agg.slice_layouts[(n_ct, k)] = SliceLayout(agg, n_ct, k)
    return lay


def slice_round(agg: EncryptedAggregator, transport: Transport, values: Any) -> np.ndarray:
    """The packed sub-values of the K-peer sum (offsets not removed), in encoder order."""
    r = SliceRound(agg, transport, agg.ciphertexts(values.size))
    with agg._phase("encrypt"):
        buf = r.encrypt(values)
    with agg._phase("communicate"):
        own = r.reduce_ciphertexts(buf)
        mine = buf.chunk(own)
        c1 = r.gather_c1(mine, own)
    with agg._phase("decrypt"):
        words, digest = r.share(c1)
    with agg._phase("communicate"):
        summed = r.reduce_shares(words, digest, own)
    with agg._phase("decrypt"):
        sub = r.open(mine, summed)
    with agg._phase("communicate"):
        return r.gather_plain(sub, own)


class SliceRound:
    """The steps of one peer's round on slices (module docstring), on ``agg.topology``."""

    def __init__(self, agg: EncryptedAggregator, transport: Transport, n_ct: int) -> None:
        self.agg, self.transport = agg, transport
        self.lay = _layout(agg, n_ct, transport.world_size)

    def encrypt(self, values: Any) -> RecordBuffer:
        """Step 1: the compressed batch of ``values`` as c0 and c1 rows x P positions."""
        agg, lay = self.agg, self.lay
        (ct,) = agg.encrypt(values, [lay.n_ct])
        c0, c1 = agg.backend.to_numpy(ct.c0), agg.backend.to_numpy(ct.c1)
        rows = np.concatenate([lay.to_positions(c0), lay.to_positions(c1)])
        return RecordBuffer(rows, lay.offsets, lay.ct_rows)

    def reduce_ciphertexts(self, buf: RecordBuffer) -> int:
        """Step 1's reduce-scatter: the index of the chunk this peer holds summed."""
        return reduce_scatter_records(self.transport, buf, self.lay.fold_ct, self.agg.topology)

    def gather_c1(self, mine: np.ndarray, own: int) -> np.ndarray:
        """Step 2: the aggregated c1 of the whole batch, (n_ct, level, N)."""
        lay = self.lay
        c1 = RecordBuffer(
            np.zeros((len(lay.c1_widths), lay.positions), np.uint32), lay.offsets, lay.c1_rows
        )
        c1.chunk(own)[:] = mine[lay.w :]
        all_gather_records(self.transport, c1, own, self.agg.topology)
        if bool((c1.data >= lay.q).any()):
            raise ValueError("a gathered c1 residue is not below its modulus")
        return lay.from_positions(c1.data)

    def share(self, c1: np.ndarray) -> tuple[np.ndarray, bytes]:
        """Step 3: this peer's compressed smudged share of the batch as words x (P + K), a
        header column (the c1 digest) opening every chunk; and the digest."""
        agg, lay = self.agg, self.lay
        data = np.zeros((lay.n_ct, 2) + c1.shape[1:], dtype=np.uint32)
        data[:, 1] = c1
        assert agg._party is not None
        ct = Ciphertext(agg.params, agg.backend.asarray(data))
        share = agg._party.decryption_share(agg.decryptor, ct)
        small = CompressedDecryptionShare.compress(share, agg.bits).data
        words = lay.to_positions(agg.backend.to_numpy(small))
        return np.insert(words, lay.offsets[:-1], lay.header(share.digest), axis=1), share.digest

    def reduce_shares(self, words: np.ndarray, digest: bytes, own: int) -> np.ndarray:
        """Step 3's reduce-scatter: the sum of every peer's share of the own positions, (W, M);
        refused unless every peer's header was this peer's digest."""
        lay = self.lay
        buf = RecordBuffer(words, lay.share_offsets, lay.word_rows)
        if reduce_scatter_records(self.transport, buf, lay.fold_words, self.agg.topology) != own:
            raise RuntimeError("ownership of shares and ciphertexts differs")
        summed = buf.chunk(own)
        if not np.array_equal(summed[:, :1], lay.header(digest, lay.k)):
            raise ShareMismatch("a peer's decryption share belongs to another c1")
        return np.ascontiguousarray(summed[:, 1:])

    def open(self, mine: np.ndarray, summed: np.ndarray) -> np.ndarray:
        """Step 4: the own positions decrypted, as packed sub-values (pack, M) uint64."""
        agg, be = self.agg, self.agg.backend
        c0 = be.asarray(np.ascontiguousarray(mine[: self.lay.w]))
        coeffs = open_positions(agg.ctx, agg.level, agg.bits, c0, be.asarray(summed))
        return be.to_numpy(agg.encoder.unpack_positions(coeffs)).astype(np.uint64)

    def gather_plain(self, sub: np.ndarray, own: int) -> np.ndarray:
        """Step 4's all-gather: every position's sub-values, int64 in encoder order."""
        lay = self.lay
        plain = RecordBuffer(
            np.zeros((len(lay.plain_widths), lay.positions), np.uint32), lay.offsets, lay.plain_rows
        )
        plain.chunk(own)[:] = _split(sub) if lay.split else sub.astype(np.uint32)
        all_gather_records(self.transport, plain, own, self.agg.topology)
        got = _join(plain.data) if lay.split else plain.data.astype(np.uint64)
        return lay.from_positions(got).reshape(-1).astype(np.int64)


def _split(sub: np.ndarray) -> np.ndarray:
    """(pack, M) sub-values of more than 32 bits -> (2 pack, M) rows: low, high, low, ..."""
    out = np.empty((2 * sub.shape[0], sub.shape[1]), dtype=np.uint32)
    out[0::2] = (sub & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    out[1::2] = (sub >> np.uint64(32)).astype(np.uint32)
    return out


def _join(rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_split`."""
    return rows[0::2].astype(np.uint64) | (rows[1::2].astype(np.uint64) << np.uint64(32))
