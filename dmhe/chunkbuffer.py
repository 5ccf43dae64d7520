"""One peer's K chunks of a flat array in one buffer, and the executor of
:class:`~dmhe.collectives.Scheduled` steps on it (a few numpy calls per message).

Split from :mod:`dmhe.collectives`, which re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dmhe.transport import Transport

__all__ = ["ChunkBuffer", "Step", "run_spans", "run_steps_flat"]

#: one step of a peer: ("send" | "fold" | "put", peer, runs); a run ``(start, count)`` is the
#: chunk indices ``start, start + 1, ... (mod K)``; "fold" combines what arrives into the
#: chunks held, "put" stores it
Step = tuple[str, int, tuple[tuple[int, int], ...]]


def run_spans(off: list[int], runs: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """The buffer slices ``(start, stop)`` of ``runs`` for chunk offsets ``off`` (K + 1 of
    them): one per run, two where a run wraps past the last chunk."""
    out, k = [], len(off) - 1
    for s, c in runs:
        if c and s + c <= k:
            out.append((off[s], off[s + c]))
        elif c:
            out += [(off[s], off[k]), (0, off[s + c - k])]
    return out


class ChunkBuffer:
    """K chunks of one 1-D array, in index order: chunk i is ``data[offsets[i]:offsets[i+1]]``.

    A step's chunks are one or two slices per run, so sending them is one ``bytes.join`` and
    receiving them one ``frombuffer`` and one in-place ufunc per slice. Batched messages have
    the layout of :func:`dmhe.framing.pack_blobs` (uint32 count, uint32 byte lengths, bytes),
    and the lengths of a received message are checked against the chunks they must fill.
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        if data.ndim != 1 or offsets.ndim != 1 or len(offsets) < 2:
            raise ValueError("ChunkBuffer needs 1-D data and at least two offsets")
        if offsets[0] != 0 or offsets[-1] != data.size or np.any(np.diff(offsets) < 0):
            raise ValueError("chunk offsets must rise from 0 to the data size")
        self.data = data
        self.offsets = offsets
        self.k = len(offsets) - 1
        lengths = np.diff(offsets) * data.itemsize
        if self.k and int(lengths.max()) >= 2**32:
            raise ValueError("a chunk of 4 GiB or more does not fit a batched message")
        # per message: Python ints and ready header bytes, not numpy scalars and conversions
        self._off: list[int] = offsets.tolist()
        self._lengths = lengths.astype("<u4")
        self._item = data.itemsize

    @classmethod
    def split(cls, values: np.ndarray, k: int, dtype: Any) -> ChunkBuffer:
        """A copy of ``values`` cut as :func:`split_chunks` cuts it."""
        q, rem = divmod(values.size, k)
        sizes = np.full(k, q, dtype=np.int64)
        sizes[:rem] += 1
        wire = np.dtype(dtype).newbyteorder("<")
        return cls(np.array(values, dtype=wire), np.concatenate(([0], np.cumsum(sizes))))

    @classmethod
    def join(cls, chunks: Sequence[Any], dtype: Any) -> ChunkBuffer:
        """A copy of ``chunks`` (1-D arrays) in one buffer."""
        arrays = [np.asarray(c) for c in chunks]
        if any(a.ndim != 1 for a in arrays):
            raise ValueError("a flat codec needs 1-D chunks")
        sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
        wire = np.dtype(dtype).newbyteorder("<")
        data = np.concatenate(arrays).astype(wire, copy=False) if arrays else np.zeros(0, wire)
        return cls(data, np.concatenate(([0], np.cumsum(sizes))))

    def chunk(self, i: int) -> np.ndarray:
        """Chunk ``i`` (a view)."""
        return self.data[self._off[i] : self._off[i + 1]]

    def chunks(self) -> list[np.ndarray]:
        """All K chunks, in index order (views)."""
        return np.split(self.data, self.offsets[1:-1])

    def _spans(self, runs: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
        return run_spans(self._off, runs)

    def _header(self, runs: tuple[tuple[int, int], ...]) -> list[bytes]:
        lens, k, count = self._lengths, self.k, 0
        parts = [b""]
        for s, c in runs:
            count += c
            parts.append(lens[s : s + c].tobytes())
            if s + c > k:
                parts.append(lens[: s + c - k].tobytes())
        parts[0] = count.to_bytes(4, "little")
        return parts

    def message(self, runs: tuple[tuple[int, int], ...]) -> bytes:
        """The chunks of ``runs`` as one batched message."""
        d = self.data
        parts: list[Any] = self._header(runs)
        parts += [d[a:b] for a, b in self._spans(runs)]  # contiguous views: join copies once
        return b"".join(parts)

    def take(self, runs: tuple[tuple[int, int], ...], message: bytes, ufunc: Any) -> None:
        """Fold (``ufunc``) or store (None) a batched message into the chunks of ``runs``."""
        head = b"".join(self._header(runs))
        if not message.startswith(head):
            count = int.from_bytes(head[:4], "little")
            raise ValueError(f"batched message does not hold the {count} expected chunk(s)")
        spans = self._spans(runs)
        if len(message) != len(head) + self._item * sum(b - a for a, b in spans):
            raise ValueError(f"batched message holds {len(message)} bytes, its lengths say more")
        self._fill(np.frombuffer(message, self.data.dtype, offset=len(head)), spans, ufunc)

    def raw(self, i: int) -> bytes:
        """Chunk ``i`` alone, as its codec encodes it."""
        return self.chunk(i).tobytes()

    def take_raw(self, i: int, message: bytes, ufunc: Any) -> None:
        """Fold or store one chunk's bytes into chunk ``i``."""
        a, b = self._off[i], self._off[i + 1]
        if len(message) != self._item * (b - a):
            raise ValueError(f"chunk {i}: {len(message)} bytes, expected {self._item * (b - a)}")
        self._fill(np.frombuffer(message, self.data.dtype), [(a, b)], ufunc)

    def _fill(self, body: np.ndarray, spans: list[tuple[int, int]], ufunc: Any) -> None:
        pos, d = 0, self.data
        for a, b in spans:
            piece = body[pos : pos + b - a]
            pos += b - a
            if ufunc is None:
                d[a:b] = piece
            else:
                ufunc(d[a:b], piece, out=d[a:b])


def run_steps_flat(
    transport: Transport, steps: list[Step], buf: ChunkBuffer, ufunc: Any, batch: bool
) -> None:
    """:func:`run_steps` on a :class:`ChunkBuffer`: the same messages, a few numpy calls per
    message instead of three Python calls per chunk."""
    if not batch:
        _run_chunks_flat(transport, steps, buf, ufunc)
        return
    for what, peer, runs in steps:
        if what == "send":
            transport.send(peer, buf.message(runs))
        else:
            buf.take(runs, transport.recv(peer), ufunc if what == "fold" else None)


def _run_chunks_flat(transport: Transport, steps: list[Step], buf: ChunkBuffer, ufunc: Any) -> None:
    """One message per chunk (:meth:`ChunkBuffer.raw` / :meth:`ChunkBuffer.take_raw`, inlined:
    at K = 1000 a ring round is 4(K-1) messages, and this loop is their only Python work)."""
    k, off, data, item = buf.k, buf._off, buf.data, buf._item
    dtype, send, recv = data.dtype, transport.send, transport.recv
    for what, peer, runs in steps:
        for s, c in runs:
            for i in range(s, s + c):
                if i >= k:
                    i -= k
                a, b = off[i], off[i + 1]
                if what == "send":
                    send(peer, data[a:b].tobytes())
                    continue
                message = recv(peer)
                if len(message) != item * (b - a):
                    raise ValueError(f"chunk {i}: {len(message)} bytes, expected {item * (b - a)}")
                if what == "fold":
                    view = data[a:b]
                    ufunc(view, np.frombuffer(message, dtype), out=view)
                else:
                    data[a:b] = np.frombuffer(message, dtype)
