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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from dmhe.chunkbuffer import ChunkBuffer, Step, run_steps_flat
from dmhe.framing import pack_blobs, unpack_blobs
from dmhe.recordbuffer import Fold, RecordBuffer, run_record_steps
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
    "all_gather_records",
    "array_codec",
    "reduce_scatter",
    "reduce_scatter_records",
    "reduction_inputs",
    "run_steps",
    "run_steps_flat",
    "split_chunks",
]

T = TypeVar("T")


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
        steps, own = _schedule(self, "rs", k, r, 0)
        run_steps_flat(transport, steps, buf, ufunc, self.batch)
        run_steps_flat(transport, _schedule(self, "ag", k, r, own)[0], buf, None, self.batch)


@functools.lru_cache(maxsize=8)
def _schedule(topo: Scheduled, kind: str, k: int, r: int, index: int) -> tuple[list[Step], int]:
    """``topo``'s steps of peer r, built once per process for the last few (K, r): one peer per
    process runs the same schedule every round (the ring's is 4(K-1) tuples; read, never
    changed); K peers as threads of one process miss and build them as before."""
    if kind == "rs":
        return topo.reduce_scatter_steps(k, r)
    return topo.all_gather_steps(k, r, index), index


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


def _scheduled(topology: Topology) -> Scheduled:
    if not isinstance(topology, Scheduled):
        raise TypeError(f"record buffers need a Scheduled topology, not {type(topology).__name__}")
    return topology


def reduce_scatter_records(
    transport: Transport, buf: RecordBuffer, fold: Fold, topology: Topology = RING
) -> int:
    """Reduce-scatter of ``buf``'s K chunks in place; returns the index of the chunk this
    peer holds combined (``fold``) over all peers, the same index as :func:`reduce_scatter`."""
    topo, k, r = _scheduled(topology), transport.world_size, transport.rank
    if buf.k != k:
        raise ValueError(f"need {k} chunks, got {buf.k}")
    steps, own = _schedule(topo, "rs", k, r, 0)
    run_record_steps(transport, steps, buf, fold, topo.batch)
    return own


def all_gather_records(
    transport: Transport, buf: RecordBuffer, index: int, topology: Topology = RING
) -> None:
    """All-gather in place: this peer's chunk ``index`` of ``buf`` in, every chunk out."""
    topo, k, r = _scheduled(topology), transport.world_size, transport.rank
    if buf.k != k or not 0 <= index < k:
        raise ValueError(f"chunk {index} of {buf.k} for {k} peers")
    run_record_steps(transport, _schedule(topo, "ag", k, r, index)[0], buf, None, topo.batch)
