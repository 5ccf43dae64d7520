"""K chunks of fixed-width integer records, bit-packed on the wire, and the executor of
:class:`~dmhe.collectives.Scheduled` steps on them.

A :class:`RecordBuffer` holds R rows of P positions (uint32, shape (R, P)); chunk i is the
columns ``offsets[i]:offsets[i+1]``. A span of positions travels as its :class:`RowCodec`
packs it (the encrypted round's: every row bit-packed at its width, so a chunk of ciphertext
coefficients costs what its bit-packed frame costs), and a step's message is the packed spans
of its runs back to back with an 8-byte BLAKE2b check value (:data:`SEAL_BYTES`; a checksum
against corruption, not a MAC) and no header: both ends know the runs, so the length is
checked exactly, then the check value, then every value by the codec.

``fold(held, arrived)`` combines two (R, M) blocks of the same positions into ``held`` (the
reductions' combine: modular addition of residues, addition of compressed words); it also
refuses values out of range for their row (a residue not below its modulus). An all-gather
stores without folding. This is the layout of the encrypted round's coefficient slices
(:mod:`dmhe.aggregators.encrypted_slices`): every chunk has the same number of positions,
whatever the number of ciphertexts, so every topology moves the ring's bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dmhe.chunkbuffer import Step, run_spans
from dmhe.transport import Transport

__all__ = ["SEAL_BYTES", "Fold", "RecordBuffer", "RowCodec", "even_offsets", "run_record_steps"]

#: bytes of the check value closing every message
SEAL_BYTES = 8


def _seal(body: bytes | memoryview) -> bytes:
    return hashlib.blake2b(body, digest_size=SEAL_BYTES, person=b"dmhe-records-v1").digest()


#: combine an arrived (R, M) block into the held one, in place
Fold = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class RowCodec:
    """How a span of M positions of R rows travels: ``pack(block (R, M)) -> bytes``,
    ``unpack(bytes, M) -> block`` (checking every value, raising ValueError on bad bytes) and
    ``size(M)``, the exact byte length of a packed span."""

    rows: int
    pack: Callable[[np.ndarray], bytes]
    unpack: Callable[[memoryview, int], np.ndarray]
    size: Callable[[int], int]


def even_offsets(positions: int, k: int) -> np.ndarray:
    """K+1 offsets cutting ``positions`` into K chunks whose sizes differ by at most one."""
    if positions < 0 or k < 1:
        raise ValueError(f"cannot split {positions} positions into {k} chunks")
    return np.array([i * positions // k for i in range(k + 1)], dtype=np.int64)


class RecordBuffer:
    """R rows of uint32 over P positions cut into K chunks, travelling as ``codec`` packs them."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, codec: RowCodec) -> None:
        if data.dtype != np.uint32 or data.ndim != 2 or data.shape[0] != codec.rows:
            raise ValueError(f"records of {data.dtype} {data.shape} for {codec.rows} rows")
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0:
            raise ValueError("chunk offsets must start at 0")
        if offsets[-1] != data.shape[1] or np.any(np.diff(offsets) < 0):
            raise ValueError("chunk offsets must rise to the number of positions")
        self.data = data
        self.offsets = offsets
        self.codec = codec
        self.k = len(offsets) - 1
        self._off: list[int] = offsets.tolist()

    def chunk(self, i: int) -> np.ndarray:
        """Chunk ``i``: the (R, M_i) view of its positions."""
        return self.data[:, self._off[i] : self._off[i + 1]]

    def _spans(self, runs: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
        return [(a, b) for a, b in run_spans(self._off, runs) if b > a]

    def message(self, runs: tuple[tuple[int, int], ...]) -> bytes:
        """The positions of ``runs``, each span packed by the codec, back to back, sealed."""
        body = b"".join(self.codec.pack(self.data[:, a:b]) for a, b in self._spans(runs))
        return body + _seal(body)

    def take(self, runs: tuple[tuple[int, int], ...], message: bytes, fold: Fold | None) -> None:
        """Fold (or with None store) a message of ``runs`` into their positions; the length
        must be exactly theirs, its check value right and every value pass the codec's checks,
        else ValueError (before anything is stored; a fold may still refuse a later span's
        values after folding an earlier one: the round is then lost either way)."""
        spans = self._spans(runs)
        sizes = [self.codec.size(b - a) for a, b in spans]
        if len(message) != sum(sizes) + SEAL_BYTES:
            raise ValueError(f"message of {len(message)} bytes for {sum(sizes) + SEAL_BYTES}")
        view, pos = memoryview(message), 0
        if _seal(view[:-SEAL_BYTES]) != message[-SEAL_BYTES:]:
            raise ValueError("message check value does not match: corrupted in transit")
        blocks = []
        for (a, b), size in zip(spans, sizes, strict=True):
            blocks.append(self.codec.unpack(view[pos : pos + size], b - a))
            pos += size
        for (a, b), block in zip(spans, blocks, strict=True):
            if fold is None:
                self.data[:, a:b] = block
            else:
                fold(self.data[:, a:b], block)


def run_record_steps(
    transport: Transport, steps: list[Step], buf: RecordBuffer, fold: Fold | None, batch: bool
) -> None:
    """Run a peer's steps on ``buf``: with ``batch`` one message per step, else one per chunk
    (the same messages as the topology's per-chunk codecs would send)."""
    k = buf.k
    for what, peer, runs in steps:
        parts = [runs] if batch else [(((s + j) % k, 1),) for s, c in runs for j in range(c)]
        for part in parts:
            if what == "send":
                transport.send(peer, buf.message(part))
            else:
                buf.take(part, transport.recv(peer), fold if what == "fold" else None)
