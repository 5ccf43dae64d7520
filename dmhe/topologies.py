"""Log-depth topologies for :mod:`dmhe.collectives`: recursive halving and doubling.

The ring of :mod:`dmhe.collectives` takes K-1 sequential message steps per collective, so on a
link with one-way latency ``a`` a collective waits at least ``(K-1)·a``. :class:`RecursiveHalving`
moves the same bytes in ``ceil(log2 K)`` steps (plus one fold-in step at each end when K is not
a power of two):

* reduce-scatter by recursive halving: at step ``m = P/2, P/4, ..., 1`` a peer exchanges with
  ``v XOR m`` and sends the half of its remaining chunks that the partner's side keeps, folding
  the other half in; after ``log2 P`` steps each peer holds one chunk reduced over all peers;
* all-gather by recursive doubling: the reverse, each step doubling the chunks a peer holds.

K not a power of two: with ``P = 2**floor(log2 K)``, the ``K - P`` extra peers ``P + i`` first
fold all their chunks into partner ``i`` (one step), the P peers run the power-of-two schedule
on behalf of both, and the partner hands the extra its result (one step). The partner then
carries up to twice the ring's bytes; every other peer carries exactly the ring's bytes.

Every chunk travels as its own message, as on the ring, so for K a power of two each peer sends
and receives exactly the ring's messages and bytes. A reduce-scatter leaves peer r with chunk
``(r + 1) % K``, the ring's choice, so ``all_gather_bytes`` and ownership checks written for the
ring hold unchanged; :meth:`RecursiveHalving.all_gather` accepts any index of the form
``(r + c) % K`` with the same ``c`` on every peer (as the ring does). Every chunk is reduced
along one path, so every peer ends with the same bits even for floats; for exact combines
(integers, residues, ciphertexts) the result equals the ring's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

from dmhe.collectives import RING, Codec, Topology
from dmhe.transport import Transport

__all__ = [
    "HALVING",
    "TOPOLOGY_NAMES",
    "RecursiveHalving",
    "collective_steps",
    "make_topology",
]

T = TypeVar("T")

#: the names :func:`make_topology` accepts
TOPOLOGY_NAMES = ("ring", "halving", "auto")


def _layout(k: int) -> tuple[int, int]:
    """``(P, extra)``: the largest power of two P <= K and the K - P peers folded into it."""
    p = 1 << (k.bit_length() - 1)
    return p, k - p


class RecursiveHalving:
    """Recursive-halving reduce-scatter and recursive-doubling all-gather (see the module)."""

    name = "halving"

    @staticmethod
    def _members(v: int, p: int, extra: int) -> list[int]:
        """Ranks whose chunks virtual peer ``v`` carries: itself and its extra, if any."""
        return [v, p + v] if v < extra else [v]

    def _window(self, base: int, size: int, p: int, extra: int) -> list[int]:
        """Ranks carried by virtual peers ``base .. base + size - 1``, in a fixed order that
        sender and receiver both derive."""
        out: list[int] = []
        for w in range(base, base + size):
            out.extend(self._members(w, p, extra))
        return out

    def reduce_scatter(
        self, transport: Transport, chunks: Sequence[T], codec: Codec[T]
    ) -> tuple[int, T]:
        """K chunks in; ``((rank + 1) % K, that chunk combined over all peers)`` out."""
        k, r = transport.world_size, transport.rank
        if len(chunks) != k:
            raise ValueError(f"need {k} chunks, got {len(chunks)}")
        if codec.combine is None:
            raise ValueError("reduce_scatter needs a codec with combine")
        combine = codec.combine
        p, extra = _layout(k)

        def block(q: int) -> int:
            return (q + 1) % k

        if r >= p:  # an extra peer: fold everything into the partner, wait for the result
            for b in range(k):
                transport.send(r - p, codec.encode(chunks[b]))
            return block(r), codec.decode(transport.recv(r - p), block(r))
        acc = list(chunks)
        if r < extra:
            for b in range(k):
                acc[b] = combine(acc[b], codec.decode(transport.recv(p + r), b))
        m = p // 2
        while m >= 1:
            base = r & ~(2 * m - 1)
            mine, theirs = (base, base + m) if not r & m else (base + m, base)
            peer = r ^ m
            for q in self._window(theirs, m, p, extra):
                transport.send(peer, codec.encode(acc[block(q)]))
            for q in self._window(mine, m, p, extra):
                b = block(q)
                acc[b] = combine(acc[b], codec.decode(transport.recv(peer), b))
            m //= 2
        if r < extra:
            transport.send(p + r, codec.encode(acc[block(p + r)]))
        return block(r), acc[block(r)]

    def all_gather(self, transport: Transport, index: int, chunk: T, codec: Codec[T]) -> list[T]:
        """Peer r's chunk ``index`` in (``index - r`` the same mod K on every peer); all K
        chunks, in index order, out."""
        k, r = transport.world_size, transport.rank
        if not 0 <= index < k:
            raise ValueError(f"chunk index {index} outside [0, {k})")
        shift = (index - r) % k
        p, extra = _layout(k)

        def block(q: int) -> int:
            return (q + shift) % k

        out: list[Any] = [None] * k
        out[index] = chunk
        if r >= p:  # an extra peer: hand the chunk to the partner, receive everything else
            transport.send(r - p, codec.encode(chunk))
            for b in range(k):
                if b != index:
                    out[b] = codec.decode(transport.recv(r - p), b)
            return out
        if r < extra:
            b = block(p + r)
            out[b] = codec.decode(transport.recv(p + r), b)
        m = 1
        while m < p:
            base = r & ~(m - 1)
            peer = r ^ m
            for q in self._window(base, m, p, extra):
                transport.send(peer, codec.encode(out[block(q)]))
            for q in self._window(base ^ m, m, p, extra):
                b = block(q)
                out[b] = codec.decode(transport.recv(peer), b)
            m *= 2
        if r < extra:
            mine = block(p + r)
            for b in range(k):
                if b != mine:
                    transport.send(p + r, codec.encode(out[b]))
        return out


#: the log-depth topology (stateless, shared)
HALVING = RecursiveHalving()


def collective_steps(name: str, k: int) -> int:
    """Sequential message steps of one reduce-scatter or all-gather on ``k`` peers."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if name == "ring":
        return k - 1
    if name == "halving":
        p, extra = _layout(k)
        return int(math.log2(p)) + (2 if extra else 0)
    raise ValueError(f"unknown topology {name!r}; valid: ring, halving")


def make_topology(
    name: str, k: int, link: Any = None, payload_bytes: int = 0, passes: int = 2
) -> Topology:
    """The topology named ``name`` ("ring", "halving" or "auto") for ``k`` peers.

    ``auto`` picks whichever of the two has the lower predicted time for ``passes`` collectives
    of ``payload_bytes`` per peer on ``link`` (a :class:`dmhe.netmodel.LinkProfile` or a profile
    name; default "internet"), by :func:`dmhe.netmodel.predict_collective`.
    """
    if name == "ring":
        return RING
    if name == "halving":
        return HALVING
    if name != "auto":
        raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGY_NAMES)}")
    from dmhe.netmodel import predict_collective

    ring = predict_collective("ring", k, payload_bytes, link, passes=passes)
    halving = predict_collective("halving", k, payload_bytes, link, passes=passes)
    return HALVING if halving < ring else RING
