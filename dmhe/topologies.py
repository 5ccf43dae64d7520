"""Log-depth topologies for :mod:`dmhe.collectives`: recursive halving/doubling, and Bruck.

The ring of :mod:`dmhe.collectives` takes K-1 sequential message steps per collective, so on a
link with one-way latency ``a`` a collective waits at least ``(K-1)·a``. Both topologies here
move the ring's bytes in about ``log2 K`` steps:

* :class:`RecursiveHalving`: reduce-scatter by recursive halving (at step ``m = P/2, ..., 1`` a
  peer exchanges with ``v XOR m`` the half of its remaining chunks that the partner's side
  keeps) and all-gather by recursive doubling (the reverse). K not a power of two: with
  ``P = 2**floor(log2 K)`` the K - P extra peers ``P + i`` first fold all their chunks into
  partner ``i``, the P peers run the power-of-two schedule for both, and the partner hands the
  extra its result: ``floor(log2 K) + 2`` steps, and the partners carry up to twice the ring's
  bytes (the extra's whole vector). For K a power of two: exactly the ring's bytes and messages.
* :class:`Bruck`: Bruck's all-gather and its transpose as the reduce-scatter: ``ceil(log2 K)``
  steps for every K, and exactly the ring's K-1 chunks per peer per collective.

Both are :class:`~dmhe.collectives.Scheduled`: each peer's steps (send, fold or put a run of
chunk indices) are listed once and run by the collectives' executor, per chunk or, for codecs
that declare :class:`~dmhe.collectives.FlatArrays`, on one buffer with a few numpy calls per
message. Every chunk travels as its own message, as on the ring; the ``*-batched`` variants
send the chunks of one step as one message (uint32 count and lengths in front).

A reduce-scatter leaves peer r with chunk ``(r + 1) % K``, the ring's choice, so
``all_gather_bytes`` and the ownership checks written for the ring hold unchanged;
``all_gather`` accepts any index of the form ``(r + c) % K`` with the same ``c`` on every peer
(as the ring does). Every chunk is reduced along one path, so every peer ends with the same
bits even for floats; for exact combines (integers, residues, ciphertexts, decryption shares)
the result equals the ring's.
``collective_program`` gives the same schedules as per-peer steps for
:func:`dmhe.netmodel.replay`, which predicts round times for K up to 10,000.
"""

from __future__ import annotations

import math
from typing import Any

from dmhe.collectives import RING, Scheduled, Step, Topology
from dmhe.framing import pack_blobs, unpack_blobs

__all__ = [
    "BRUCK",
    "BRUCK_BATCHED",
    "HALVING",
    "HALVING_BATCHED",
    "Op",
    "TOPOLOGY_NAMES",
    "Bruck",
    "RecursiveHalving",
    "collective_program",
    "collective_steps",
    "make_topology",
    "pack_blobs",
    "unpack_blobs",
]

#: the names :func:`make_topology` accepts
TOPOLOGY_NAMES = ("ring", "halving", "bruck", "halving-batched", "bruck-batched", "auto")


def _layout(k: int) -> tuple[int, int]:
    """``(P, extra)``: the largest power of two P <= K and the K - P peers folded into it."""
    p = 1 << (k.bit_length() - 1)
    return p, k - p


Runs = tuple[tuple[int, int], ...]


class RecursiveHalving(Scheduled):
    """Recursive-halving reduce-scatter and recursive-doubling all-gather (see the module)."""

    base_name = "halving"

    @staticmethod
    def _window(base: int, size: int, p: int, extra: int, shift: int, k: int) -> Runs:
        """The chunks carried by virtual peers ``base .. base + size - 1``: those of their own
        ranks, then those of their extras (rank ``P + v`` for ``v < extra``), each run of ranks
        shifted by ``shift``, so that sender and receiver derive the same order."""
        runs = [((base + shift) % k, size)]
        folded = min(base + size, extra) - base
        if folded > 0:
            runs.append(((p + base + shift) % k, folded))
        return tuple(runs)

    def reduce_scatter_steps(self, k: int, r: int) -> tuple[list[Step], int]:
        """Fold-in, ``log2 P`` halvings, hand-back; peer r ends with chunk ``(r + 1) % K``."""
        p, extra = _layout(k)
        own = (r + 1) % k
        if r >= p:  # an extra peer: fold everything into the partner, wait for the result
            return [("send", r - p, ((0, k),)), ("put", r - p, ((own, 1),))], own
        steps: list[Step] = []
        if r < extra:
            steps.append(("fold", p + r, ((0, k),)))
        m = p // 2
        while m >= 1:
            base = r & ~(2 * m - 1)
            mine, theirs = (base, base + m) if not r & m else (base + m, base)
            steps.append(("send", r ^ m, self._window(theirs, m, p, extra, 1, k)))
            steps.append(("fold", r ^ m, self._window(mine, m, p, extra, 1, k)))
            m //= 2
        if r < extra:
            steps.append(("send", p + r, (((p + r + 1) % k, 1),)))
        return steps, own

    def all_gather_steps(self, k: int, r: int, index: int) -> list[Step]:
        """Fold-in of the extra's chunk, ``log2 P`` doublings, everything to the extra."""
        shift = (index - r) % k
        p, extra = _layout(k)
        if r >= p:  # an extra peer: hand the chunk to the partner, receive everything else
            return [("send", r - p, ((index, 1),)), ("put", r - p, (((index + 1) % k, k - 1),))]
        steps: list[Step] = []
        mate = (p + r + shift) % k
        if r < extra:
            steps.append(("put", p + r, ((mate, 1),)))
        m = 1
        while m < p:
            base = r & ~(m - 1)
            steps.append(("send", r ^ m, self._window(base, m, p, extra, shift, k)))
            steps.append(("put", r ^ m, self._window(base ^ m, m, p, extra, shift, k)))
            m *= 2
        if r < extra:
            steps.append(("send", p + r, (((mate + 1) % k, k - 1),)))
        return steps


#: the log-depth topologies (stateless, shared); ``*_BATCHED`` send one message per step
HALVING = RecursiveHalving()
HALVING_BATCHED = RecursiveHalving(batch=True)


def _distances(k: int) -> list[int]:
    """1, 2, 4, ... below K: the hop lengths of the Bruck schedule."""
    out, d = [], 1
    while d < k:
        out.append(d)
        d *= 2
    return out


class Bruck(Scheduled):
    """Bruck's all-gather and its transpose, a reduce-scatter: ``ceil(log2 K)`` steps for every
    K, no fold-in, and exactly the ring's K-1 chunks per peer per collective.

    Peer r sees the chunks rotated: position ``i`` is chunk ``(r + 1 + i) % K`` in the
    reduce-scatter and ``(index + i) % K`` in the all-gather. All-gather: at hop
    ``d = 1, 2, 4, ...`` peer r sends its first ``min(d, K - d)`` positions to ``r - d`` and
    appends as many from ``r + d``. Reduce-scatter runs the same edges backwards (hops ``d``
    descending): peer r sends the partial sums of positions ``d .. d + cnt - 1`` to ``r + d``
    (where they are positions ``0 .. cnt - 1``) and adds those from ``r - d``. Each position is
    sent only after every addition into it, so peer r ends with position 0 summed over all
    peers, once each: chunk ``(r + 1) % K``, the ring's.
    """

    base_name = "bruck"

    def reduce_scatter_steps(self, k: int, r: int) -> tuple[list[Step], int]:
        """One send and one fold per hop, hops descending."""
        steps: list[Step] = []
        for d in reversed(_distances(k)):
            cnt = min(d, k - d)
            steps.append(("send", (r + d) % k, (((r + 1 + d) % k, cnt),)))
            steps.append(("fold", (r - d) % k, (((r + 1) % k, cnt),)))
        return steps, (r + 1) % k

    def all_gather_steps(self, k: int, r: int, index: int) -> list[Step]:
        """One send and one put per hop, hops ascending."""
        steps: list[Step] = []
        for d in _distances(k):
            cnt = min(d, k - d)
            steps.append(("send", (r - d) % k, ((index, cnt),)))
            steps.append(("put", (r + d) % k, (((index + d) % k, cnt),)))
        return steps


BRUCK = Bruck()
BRUCK_BATCHED = Bruck(batch=True)


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


def _bruck_program(kind: str, k: int, block_bytes: list[int]) -> list[list[Op]]:
    """The messages of :class:`Bruck`, one op per hop."""
    prefix = [0]
    for i in range(2 * k):
        prefix.append(prefix[-1] + block_bytes[i % k])
    dists = _distances(k)
    progs: list[list[Op]] = []
    for r in range(k):
        first = (r + 1) % k  # position 0 is chunk (r + 1) % k in both collectives

        def span(a: int, b: int, first: int = first) -> int:
            return prefix[first + b] - prefix[first + a]

        ops: list[Op] = []
        for d in reversed(dists) if kind == "rs" else dists:
            cnt = min(d, k - d)
            if kind == "rs":
                ops += [("send", (r + d) % k, span(d, d + cnt), cnt)]
                ops += [("recv", (r - d) % k, span(0, cnt), cnt)]
            else:
                ops += [("send", (r - d) % k, span(0, cnt), cnt)]
                ops += [("recv", (r + d) % k, span(d, d + cnt), cnt)]
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
    if name.endswith("-batched"):  # one message per step: the packed lengths on top
        plain = collective_program(name.removesuffix("-batched"), kind, k, block_bytes)
        return [[(w, peer, nb + 4 * (nm + 1), 1) for w, peer, nb, nm in ops] for ops in plain]
    if kind not in ("rs", "ag"):
        raise ValueError(f"kind must be 'rs' or 'ag', got {kind!r}")
    if name == "ring":
        return _ring_program(kind, k, block_bytes)
    if name == "halving":
        return _halving_program(kind, k, block_bytes)
    if name == "bruck":
        return _bruck_program(kind, k, block_bytes)
    raise ValueError(f"unknown topology {name!r}; valid: ring, halving, bruck")


def collective_steps(name: str, k: int) -> int:
    """Sequential message steps of one reduce-scatter or all-gather on ``k`` peers."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    name = name.removesuffix("-batched")
    if name == "ring":
        return k - 1
    if name == "halving":
        p, extra = _layout(k)
        return int(math.log2(p)) + (2 if extra else 0)
    if name == "bruck":
        return len(_distances(k))
    raise ValueError(f"unknown topology {name!r}; valid: ring, halving, bruck")


def make_topology(
    name: str, k: int, link: Any = None, payload_bytes: int = 0, passes: int = 2
) -> Topology:
    """The topology named ``name`` (one of :data:`TOPOLOGY_NAMES`) for ``k`` peers.

    ``auto`` picks the one of ring, halving and bruck with the lowest predicted network time
    for ``passes`` alternating reduce-scatters and all-gathers of ``payload_bytes`` per peer on
    ``link`` (a :class:`dmhe.netmodel.LinkProfile` or a profile name; default "internet"), by
    :func:`dmhe.netmodel.predict_collective` (ties go to the earlier); a log-depth choice is
    batched from K = 64 on, where chunks are small and per-message costs dominate.
    """
    named: dict[str, Topology] = {
        "ring": RING,
        "halving": HALVING,
        "bruck": BRUCK,
        "halving-batched": HALVING_BATCHED,
        "bruck-batched": BRUCK_BATCHED,
    }
    if name in named:
        return named[name]
    if name != "auto":
        raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGY_NAMES)}")
    from dmhe.netmodel import predict_collective

    cands = ("ring", "halving", "bruck")
    cost = {n: predict_collective(n, k, payload_bytes, link, passes=passes) for n in cands}
    best = min(cands, key=lambda n: cost[n])
    return named[f"{best}-batched"] if best != "ring" and k >= 64 else named[best]
