"""Collectives over a :class:`~dmhe.transport.Transport`: reduce-scatter, all-gather, all-reduce.

Each collective is written once, against a :class:`Topology` (the order in which peers pass
chunks) and a :class:`Codec` (how a chunk becomes bytes, comes back, and combines with
another). The ring (:data:`RING`) is the first topology: it moves ``2·(K-1)/K`` times the
payload per peer, whatever K is. Another topology (a tree, a hierarchical ring) plugs in by
implementing the two methods of :class:`Topology`; the aggregators do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from dmhe.transport import Transport

__all__ = [
    "BYTES",
    "RING",
    "Codec",
    "Ring",
    "Topology",
    "all_gather",
    "all_gather_bytes",
    "all_reduce",
    "all_reduce_array",
    "array_codec",
    "reduce_scatter",
    "reduction_inputs",
    "split_chunks",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one chunk type travels: ``encode(chunk) -> bytes``, ``decode(bytes, index) -> chunk``
    (the chunk index lets it recover shapes) and ``combine(a, b)`` (associative and commutative;
    only reductions need it)."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes, int], T]
    combine: Callable[[T, T], T] | None = None


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


class Ring:
    """The ring: peer r sends to r+1 and receives from r-1; each chunk crosses each link once.

    Reduce-scatter: after K-1 steps peer r holds chunk ``(r + 1) % K`` combined over all peers.
    At step s it sends its running chunk ``(r - s) % K`` and folds the chunk ``(r - s - 1) % K``
    received from r-1 into its own. Every chunk is reduced along one path, so every peer ends
    with the same bits even for floats. With K = 1 both collectives send nothing.
    """

    def reduce_scatter(
        self, transport: Transport, chunks: Sequence[T], codec: Codec[T]
    ) -> tuple[int, T]:
        """See the class docstring; ``codec.combine`` is required."""
        k, r, combine = reduction_inputs(transport, chunks, codec)
        acc = list(chunks)
        nxt, prv = (r + 1) % k, (r - 1) % k
        for s in range(k - 1):
            send_idx, recv_idx = (r - s) % k, (r - s - 1) % k
            transport.send(nxt, codec.encode(acc[send_idx]))
            incoming = codec.decode(transport.recv(prv), recv_idx)
            acc[recv_idx] = combine(acc[recv_idx], incoming)
        own = (r + 1) % k
        return own, acc[own]

    def all_gather(self, transport: Transport, index: int, chunk: T, codec: Codec[T]) -> list[T]:
        """Peer r starts with chunk ``index`` and ends with all K chunks in order."""
        k, r = transport.world_size, transport.rank
        out: list[Any] = [None] * k
        out[index] = chunk
        nxt, prv = (r + 1) % k, (r - 1) % k
        for s in range(k - 1):
            send_idx, recv_idx = (index - s) % k, (index - s - 1) % k
            transport.send(nxt, codec.encode(out[send_idx]))
            out[recv_idx] = codec.decode(transport.recv(prv), recv_idx)
        return out


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
    """Little-endian arrays of ``dtype``; ``shape(index)`` restores the shape (default 1-D)."""
    wire = np.dtype(dtype).newbyteorder("<")

    def encode(a: np.ndarray) -> bytes:
        return np.ascontiguousarray(a).astype(wire, copy=False).tobytes()

    def decode(buf: bytes, index: int) -> np.ndarray:
        a = np.frombuffer(buf, dtype=wire).astype(dtype)
        return a.reshape(shape(index)) if shape is not None else a

    return Codec(encode=encode, decode=decode, combine=combine)


def all_reduce_array(
    transport: Transport, values: np.ndarray, topology: Topology = RING
) -> np.ndarray:
    """Sum of a 1-D int64 or float array over all peers; identical result on every peer.

    int64 addition wraps modulo 2**64 (numpy does not raise on array overflow).
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    chunks = split_chunks(values.copy(), transport.world_size)
    return np.concatenate(all_reduce(transport, chunks, array_codec(values.dtype), topology))
