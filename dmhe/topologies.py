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
    "Op",
    "TOPOLOGY_NAMES",
    "RecursiveHalving",
    "collective_program",
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


# --------------------------------------------------------------------------- schedules

#: one step of a peer's program: ("send" | "recv", peer, bytes, messages)
Op = tuple[str, int, int, int]


def _halving_program(kind: str, k: int, block_bytes: list[int]) -> list[list[Op]]:
    """The messages of :class:`~dmhe.topologies.RecursiveHalving`, one op per step (the chunks
    of a step leave back to back, so under the model they act as one message of their sum)."""
    p = 1 << (k.bit_length() - 1)
    extra = k - p
    shift = 1  # reduce-scatter leaves rank q with chunk (q + 1) % k; all-gather starts there
    order = [q for v in range(p) for q in ([v, p + v] if v < extra else [v])]
    pos = [0] * (p + 1)  # virtual peer v's ranks start at order[pos[v]]
    for v in range(p):
        pos[v + 1] = pos[v] + (2 if v < extra else 1)
    prefix = [0]
    for q in order:
        prefix.append(prefix[-1] + block_bytes[(q + shift) % k])

    def window(base: int, size: int) -> tuple[int, int]:
        a, b = pos[base], pos[base + size]
        return prefix[b] - prefix[a], b - a

    total = sum(block_bytes)
    progs: list[list[Op]] = []
    for r in range(k):
        ops: list[Op] = []
        own = block_bytes[(r + shift) % k]
        if r >= p:
            if kind == "rs":
                ops += [("send", r - p, total, k), ("recv", r - p, own, 1)]
            else:
                ops += [("send", r - p, own, 1), ("recv", r - p, total - own, k - 1)]
            progs.append(ops)
            continue
        mate = block_bytes[(p + r + shift) % k] if r < extra else 0
        if kind == "rs":
            if r < extra:
                ops.append(("recv", p + r, total, k))
            m = p // 2
            while m >= 1:
                base = r & ~(2 * m - 1)
                mine, theirs = (base, base + m) if not r & m else (base + m, base)
                ops += [("send", r ^ m, *window(theirs, m)), ("recv", r ^ m, *window(mine, m))]
                m //= 2
            if r < extra:
                ops.append(("send", p + r, mate, 1))
        else:
            if r < extra:
                ops.append(("recv", p + r, mate, 1))
            m = 1
            while m < p:
                base = r & ~(m - 1)
                ops += [("send", r ^ m, *window(base, m)), ("recv", r ^ m, *window(base ^ m, m))]
                m *= 2
            if r < extra:
                ops.append(("send", p + r, total - mate, k - 1))
        progs.append(ops)
    return progs


def _ring_program(kind: str, k: int, block_bytes: list[int]) -> list[list[Op]]:
    """The messages of :class:`~dmhe.collectives.Ring` (all-gather from the ring's index)."""
    progs: list[list[Op]] = []
    for r in range(k):
        start = r if kind == "rs" else (r + 1) % k
        ops: list[Op] = []
        for s in range(k - 1):
            ops.append(("send", (r + 1) % k, block_bytes[(start - s) % k], 1))
            ops.append(("recv", (r - 1) % k, block_bytes[(start - s - 1) % k], 1))
        progs.append(ops)
    return progs


def collective_program(name: str, kind: str, k: int, block_bytes: list[int]) -> list[list[Op]]:
    """Per-peer op lists of one collective: ``name`` "ring" or "halving", ``kind`` "rs"
    (reduce-scatter) or "ag" (all-gather), ``block_bytes[i]`` the encoded size of chunk i."""
    if len(block_bytes) != k:
        raise ValueError(f"need {k} block sizes, got {len(block_bytes)}")
    if kind not in ("rs", "ag"):
        raise ValueError(f"kind must be 'rs' or 'ag', got {kind!r}")
    if name == "ring":
        return _ring_program(kind, k, block_bytes)
    if name == "halving":
        return _halving_program(kind, k, block_bytes)
    raise ValueError(f"unknown topology {name!r}; valid: ring, halving")


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
