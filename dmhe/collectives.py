"""Collectives over a :class:`~dmhe.transport.Transport`: reduce-scatter, all-gather, all-reduce.

Each collective is written once, against a :class:`Topology` (the order in which peers pass
chunks) and a :class:`Codec` (how a chunk becomes bytes, comes back, and combines with
another). The ring (:data:`RING`) is the first topology: it moves ``2·(K-1)/K`` times the
payload per peer, whatever K is. Another topology (a tree, a hierarchical ring) plugs in by
implementing the two methods of :class:`Topology`; the aggregators do not change.

The topologies of dmhe are :class:`Scheduled`: each gives its collectives as a list of steps per
peer (send / fold / put a run of chunk indices to or from one peer), and one executor runs them.
For a codec that declares :class:`FlatArrays` (1-D numpy chunks, e.g. :func:`array_codec`), the
executor keeps the K chunks in one :class:`ChunkBuffer` and moves a step's chunks with a few
numpy calls on views, so a peer's Python work grows with the number of messages, not with the
number of chunks; the bytes on the wire are the same as the per-chunk codec's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from dmhe.framing import pack_blobs, unpack_blobs
from dmhe.transport import Transport

__all__ = [
    "BYTES",
    "RING",
    "ChunkBuffer",
    "Codec",
    "FlatArrays",
    "Ring",
    "Scheduled",
    "Step",
    "Topology",
    "all_gather",
    "all_gather_bytes",
    "all_reduce",
    "all_reduce_array",
    "array_codec",
    "reduce_scatter",
    "reduction_inputs",
    "run_steps",
    "run_steps_flat",
    "split_chunks",
]

T = TypeVar("T")

#: one step of a peer: ("send" | "fold" | "put", peer, runs); a run ``(start, count)`` is the
#: chunk indices ``start, start + 1, ... (mod K)``; "fold" combines what arrives into the
#: chunks held, "put" stores it
Step = tuple[str, int, tuple[tuple[int, int], ...]]


@dataclass(frozen=True)
class FlatArrays:
    """What a codec declares when its chunks are 1-D numpy arrays of ``dtype`` that travel as
    their little-endian bytes, combined elementwise by ``ufunc`` (``numpy.add``; None for a
    codec that only gathers)."""

    dtype: np.dtype
    ufunc: np.ufunc | None = None


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one chunk type travels: ``encode(chunk) -> bytes``, ``decode(bytes, index) -> chunk``
    (the chunk index lets it recover shapes) and ``combine(a, b)`` (associative and commutative;
    only reductions need it). ``flat``, when set, must describe the same wire form (see
    :class:`FlatArrays`); :class:`Scheduled` topologies then skip the per-chunk calls."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes, int], T]
    combine: Callable[[T, T], T] | None = None
    flat: FlatArrays | None = None


class Topology(Protocol):
    """Who sends which chunk to whom. Results must be identical on every peer."""

    def reduce_scatter(
        self, transport: Transport, chunks: Sequence[T], codec: Codec[T]
    ) -> tuple[int, T]:
        """K chunks in; ``(index, chunk combined over all peers)`` out; every index once."""
        ...

    def all_gather(self, transport: Transport, index: int, chunk: T, codec: Codec[T]) -> list[T]:
        """This peer's chunk ``index`` in; all K chunks, in index order, out."""
        ...


def reduction_inputs(
    transport: Transport, chunks: Sequence[T], codec: Codec[T]
) -> tuple[int, int, Callable[[T, T], T]]:
    """``(K, rank, combine)`` for a reduce-scatter, after checking that there is one chunk per
    peer and that the codec can combine (every topology's first step)."""
    k = transport.world_size
    if len(chunks) != k:
        raise ValueError(f"need {k} chunks, got {len(chunks)}")
    if codec.combine is None:
        raise ValueError("reduce_scatter needs a codec with combine")
    return k, transport.rank, codec.combine


def _indices(k: int, runs: tuple[tuple[int, int], ...]) -> list[int]:
    return [(s + j) % k for s, c in runs for j in range(c)]


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
        out, off, k = [], self._off, self.k
        for s, c in runs:
            if c and s + c <= k:
                out.append((off[s], off[s + c]))
            elif c:
                out += [(off[s], off[k]), (0, off[s + c - k])]
        return out

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


def run_steps(
    transport: Transport, steps: list[Step], held: list[Any], codec: Codec[Any], batch: bool
) -> None:
    """Run ``steps`` on ``held`` (chunks by index) with per-chunk encode/decode/combine; with
    ``batch`` the chunks of one step travel as one :func:`~dmhe.framing.pack_blobs` message."""
    k, combine = transport.world_size, codec.combine
    for what, peer, runs in steps:
        idx = _indices(k, runs)
        if what == "send":
            blobs = [codec.encode(held[i]) for i in idx]
            if batch:
                transport.send(peer, pack_blobs(blobs))
            else:
                for blob in blobs:
                    transport.send(peer, blob)
            continue
        if batch:
            blobs = unpack_blobs(transport.recv(peer))
            if len(blobs) != len(idx):
                raise ValueError(
                    f"peer {transport.rank}: expected {len(idx)} chunks from peer {peer}, "
                    f"got {len(blobs)}"
                )
        else:
            blobs = [transport.recv(peer) for _ in idx]
        for i, blob in zip(idx, blobs):
            x = codec.decode(blob, i)
            held[i] = combine(held[i], x) if what == "fold" and combine else x


def run_steps_flat(
    transport: Transport, steps: list[Step], buf: ChunkBuffer, ufunc: Any, batch: bool
) -> None:
    """:func:`run_steps` on a :class:`ChunkBuffer`: the same messages, a few numpy calls per
    message instead of three Python calls per chunk."""
    for what, peer, runs in steps:
        fold = ufunc if what == "fold" else None
        if batch:
            if what == "send":
                transport.send(peer, buf.message(runs))
            else:
                buf.take(runs, transport.recv(peer), fold)
            continue
        for i in _indices(buf.k, runs):
            if what == "send":
                transport.send(peer, buf.raw(i))
            else:
                buf.take_raw(i, transport.recv(peer), fold)


class Scheduled:
    """A topology given by each peer's steps (see :data:`Step`); ``batch``: the chunks of one
    step travel as one message. Subclasses give the two step lists."""

    base_name = ""

    def __init__(self, *, batch: bool = False) -> None:
        self.batch = batch
        self.name = self.base_name + ("-batched" if batch else "")

    def reduce_scatter_steps(self, k: int, r: int) -> tuple[list[Step], int]:
        """Peer r's reduce-scatter steps and the index of the chunk it ends with."""
        raise NotImplementedError

    def all_gather_steps(self, k: int, r: int, index: int) -> list[Step]:
        """Peer r's all-gather steps, starting from its chunk ``index``."""
        raise NotImplementedError

    def reduce_scatter(
        self, transport: Transport, chunks: Sequence[T], codec: Codec[T]
    ) -> tuple[int, T]:
        """K chunks in; ``(index, chunk combined over all peers)`` out; every index once."""
        k, r, _ = reduction_inputs(transport, chunks, codec)
        steps, own = self.reduce_scatter_steps(k, r)
        flat = codec.flat
        if flat is not None and flat.ufunc is not None:
            buf = ChunkBuffer.join(chunks, flat.dtype)
            run_steps_flat(transport, steps, buf, flat.ufunc, self.batch)
            return own, buf.chunk(own)  # type: ignore[return-value]
        held = list(chunks)
        run_steps(transport, steps, held, codec, self.batch)
        return own, held[own]

    def all_gather(self, transport: Transport, index: int, chunk: T, codec: Codec[T]) -> list[T]:
        """Peer r's chunk ``index`` in (``index - r`` the same mod K on every peer); all K
        chunks, in index order, out."""
        k, r = transport.world_size, transport.rank
        if not 0 <= index < k:
            raise ValueError(f"chunk index {index} outside [0, {k})")
        held: list[Any] = [None] * k
        held[index] = chunk
        run_steps(transport, self.all_gather_steps(k, r, index), held, codec, self.batch)
        return held

    def all_reduce_buffer(self, transport: Transport, buf: ChunkBuffer, ufunc: Any) -> None:
        """Reduce-scatter then all-gather of ``buf``'s K chunks, in place: afterwards every
        chunk holds ``ufunc`` over all peers."""
        k, r = transport.world_size, transport.rank
        if buf.k != k:
            raise ValueError(f"need {k} chunks, got {buf.k}")
        steps, own = self.reduce_scatter_steps(k, r)
        run_steps_flat(transport, steps, buf, ufunc, self.batch)
        run_steps_flat(transport, self.all_gather_steps(k, r, own), buf, None, self.batch)


class Ring(Scheduled):
    """The ring: peer r sends to r+1 and receives from r-1; each chunk crosses each link once.

    Reduce-scatter: after K-1 steps peer r holds chunk ``(r + 1) % K`` combined over all peers.
    At step s it sends its running chunk ``(r - s) % K`` and folds the chunk ``(r - s - 1) % K``
    received from r-1 into its own. Every chunk is reduced along one path, so every peer ends
    with the same bits even for floats. With K = 1 both collectives send nothing.
    """

    base_name = "ring"

    def reduce_scatter_steps(self, k: int, r: int) -> tuple[list[Step], int]:
        """K-1 steps: send ``(r - s) % K`` to r+1, fold ``(r - s - 1) % K`` from r-1."""
        nxt, prv = (r + 1) % k, (r - 1) % k
        steps: list[Step] = []
        for s in range(k - 1):
            steps.append(("send", nxt, (((r - s) % k, 1),)))
            steps.append(("fold", prv, (((r - s - 1) % k, 1),)))
        return steps, (r + 1) % k

    def all_gather_steps(self, k: int, r: int, index: int) -> list[Step]:
        """K-1 steps: pass on the chunk received last, starting with chunk ``index``."""
        nxt, prv = (r + 1) % k, (r - 1) % k
        steps: list[Step] = []
        for s in range(k - 1):
            steps.append(("send", nxt, (((index - s) % k, 1),)))
            steps.append(("put", prv, (((index - s - 1) % k, 1),)))
        return steps


#: the default topology
RING = Ring()

#: raw bytes, unchanged
BYTES: Codec[bytes] = Codec(encode=bytes, decode=lambda b, _i: b)


def reduce_scatter(
    transport: Transport, chunks: Sequence[T], codec: Codec[T], topology: Topology = RING
) -> tuple[int, T]:
    """``(index, chunk combined over all peers)`` for this peer (see :class:`Topology`)."""
    return topology.reduce_scatter(transport, chunks, codec)


def all_gather(
    transport: Transport, index: int, chunk: T, codec: Codec[T], topology: Topology = RING
) -> list[T]:
    """All K chunks, in index order, from this peer's chunk ``index``."""
    return topology.all_gather(transport, index, chunk, codec)


def all_reduce(
    transport: Transport, chunks: Sequence[T], codec: Codec[T], topology: Topology = RING
) -> list[T]:
    """Reduce-scatter then all-gather: the K chunks combined over all peers, on every peer."""
    flat = codec.flat
    if flat is not None and flat.ufunc is not None and isinstance(topology, Scheduled):
        reduction_inputs(transport, chunks, codec)
        buf = ChunkBuffer.join(chunks, flat.dtype)
        topology.all_reduce_buffer(transport, buf, flat.ufunc)
        return buf.chunks()  # type: ignore[return-value]
    index, reduced = topology.reduce_scatter(transport, chunks, codec)
    return topology.all_gather(transport, index, reduced, codec)


def all_gather_bytes(transport: Transport, blob: bytes, topology: Topology = RING) -> list[bytes]:
    """Every peer's ``blob``, in rank order (peer r's blob sits at index r)."""
    k = transport.world_size
    own = (transport.rank + 1) % k
    gathered = topology.all_gather(transport, own, blob, BYTES)
    # the ring hands peer r the index (r + 1) % K; rotate back to rank order
    return [gathered[(r + 1) % k] for r in range(k)]


def split_chunks(values: np.ndarray, k: int) -> list[np.ndarray]:
    """K contiguous chunks whose lengths differ by at most one (some may be empty)."""
    return list(np.array_split(values, k))


def array_codec(
    dtype: Any, shape: Callable[[int], tuple[int, ...]] | None = None, combine: Any = np.add
) -> Codec[np.ndarray]:
    """Little-endian arrays of ``dtype``; ``shape(index)`` restores the shape (default 1-D).
    1-D chunks combined by a ufunc (the default ``numpy.add``) declare :class:`FlatArrays`."""
    wire = np.dtype(dtype).newbyteorder("<")

    def encode(a: np.ndarray) -> bytes:
        return np.ascontiguousarray(a).astype(wire, copy=False).tobytes()

    def decode(buf: bytes, index: int) -> np.ndarray:
        a = np.frombuffer(buf, dtype=wire).astype(dtype)
        return a.reshape(shape(index)) if shape is not None else a

    flat = None
    if shape is None:
        flat = FlatArrays(wire, combine if isinstance(combine, np.ufunc) else None)
    return Codec(encode=encode, decode=decode, combine=combine, flat=flat)


def all_reduce_array(
    transport: Transport, values: np.ndarray, topology: Topology = RING
) -> np.ndarray:
    """Sum of a 1-D integer or float array over all peers; identical result on every peer.

    Integer addition wraps modulo 2**bits (numpy does not raise on array overflow). A
    :class:`Scheduled` topology sums one buffer in place (no per-chunk arrays).
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if isinstance(topology, Scheduled):
        buf = ChunkBuffer.split(values, transport.world_size, values.dtype)
        topology.all_reduce_buffer(transport, buf, np.add)
        return buf.data
    chunks = split_chunks(values.copy(), transport.world_size)
    return np.concatenate(all_reduce(transport, chunks, array_codec(values.dtype), topology))
