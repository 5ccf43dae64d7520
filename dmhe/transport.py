"""How bytes move between peers: one small interface, two implementations.

The round logic (``dmhe.aggregation``) is written once against :class:`Transport`; the same code
runs K peers as threads of one process (:class:`InProcessNetwork`, the default, which counts every
byte) and one peer per process over ``torch.distributed`` (:class:`TorchDistributedTransport`,
launched with ``torchrun``).

A transport is point-to-point and ordered per (src, dst) pair: the n-th ``recv(src)`` on ``dst``
returns the n-th payload ``src`` sent to ``dst``.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = [
    "InProcessNetwork",
    "InProcessTransport",
    "PeerDropped",
    "SubRing",
    "TorchDistributedTransport",
    "Transport",
    "WaitPolicy",
    "original_rank",
    "run_peers",
]


class PeerDropped(RuntimeError):
    """A peer left the computation (simulated dropout, or a dead process)."""

    def __init__(self, rank: int, message: str | None = None) -> None:
        super().__init__(message or f"peer {rank} dropped out")
        self.rank = rank


class _NetworkAborted(RuntimeError):
    """Another peer failed; this peer stops waiting instead of hanging forever."""


class Transport(ABC):
    """Point-to-point byte transport seen from one peer.

    ``bytes_sent[dst]`` and ``bytes_received[src]`` count payload bytes plus whatever framing the
    implementation puts on the wire, so that the counters are what a network would carry.
    """

    rank: int
    world_size: int

    def __init__(self, rank: int, world_size: int) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.rank = rank
        self.world_size = world_size
        self.bytes_sent: dict[int, int] = defaultdict(int)
        self.bytes_received: dict[int, int] = defaultdict(int)

    @abstractmethod
    def send(self, dst: int, payload: bytes) -> None:
        """Queue ``payload`` for peer ``dst`` (ordered per pair)."""

    @abstractmethod
    def recv(self, src: int) -> bytes:
        """The next payload from peer ``src`` (blocks)."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait until every peer reaches the barrier."""

    @property
    def total_bytes_sent(self) -> int:
        """Bytes sent to all peers so far."""
        return sum(self.bytes_sent.values())

    @property
    def total_bytes_received(self) -> int:
        """Bytes received from all peers so far."""
        return sum(self.bytes_received.values())

    def reset_counters(self) -> None:
        """Zero the byte counters."""
        self.bytes_sent.clear()
        self.bytes_received.clear()

    def send_control(self, dst: int, payload: bytes) -> None:
        """A small control message (liveness); simulated dropouts never strike here."""
        self.send(dst, payload)

    def leave(self) -> None:
        """This peer leaves the computation now (simulated dropout); never returns."""
        raise PeerDropped(self.rank)

    def live_peers(self, among: list[int] | None = None) -> list[int]:
        """Peers (self included) of ``among`` (default: all) that answer a liveness exchange:
        each peer sends a control message to every other and waits for theirs; a peer that
        left is noticed by every receiver alike, so all live peers agree. O(K) tiny messages;
        used only by threshold rounds. Transports without failure detection see every peer as
        live."""
        group = list(range(self.world_size)) if among is None else sorted(among)
        for p in group:
            if p != self.rank:
                self.send_control(p, b"\x01")
        live = [self.rank]
        for p in group:
            if p == self.rank:
                continue
            try:
                self.recv(p)
                live.append(p)
            except PeerDropped as exc:
                if exc.rank != p:
                    raise
        return sorted(live)

    def reachable_peers(self) -> list[int]:
        """The peers this transport still reaches (all of them unless a loss was agreed)."""
        return list(range(self.world_size))

    def round_time(self, seconds: float) -> None:
        """Told the wall time of every finished round (transports with bounded waits derive
        their bound from it)."""
        return None

    def commit(self, tag: str) -> None:
        """Every member holds this step's result before anyone keeps it. In-process the peers
        share one result by construction; across processes see
        :meth:`dmhe.torch_transport.TorchDistributedTransport.commit`."""
        return None

    def recover(self, failure: PeerDropped) -> list[int]:
        """After ``failure``: the live peers agreed by every survivor (then :meth:`members`).
        Transports that cannot continue without a peer raise ``failure`` again."""
        raise failure

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise ValueError(
                f"peer {self.rank}: invalid peer {peer} (world_size {self.world_size})"
            )


class SubRing(Transport):
    """A transport over a subset of peers (``members``, original ranks, sorted), relabelled
    0..len(members)-1, on top of another: the live peers of a round, the active set of a
    threshold decryption. Errors keep naming the original ranks."""

    def __init__(self, base: Transport, members: list[int]) -> None:
        super().__init__(members.index(base.rank), len(members))
        self.base, self.members = base, list(members)

    def original(self, index: int) -> int:
        """The base transport's rank of member ``index``."""
        return self.members[index]

    def send(self, dst: int, payload: bytes) -> None:
        """Send to member ``dst``."""
        self.base.send(self.members[dst], payload)

    def recv(self, src: int) -> bytes:
        """Receive from member ``src``."""
        return self.base.recv(self.members[src])

    def send_control(self, dst: int, payload: bytes) -> None:
        """A control message to member ``dst``."""
        self.base.send_control(self.members[dst], payload)

    def leave(self) -> None:
        """This peer leaves (on the base transport)."""
        self.base.leave()

    def live_peers(self, among: list[int] | None = None) -> list[int]:
        """The base's liveness exchange over the members (indices into ``members``)."""
        group = self.members if among is None else [self.members[i] for i in among]
        return [self.members.index(p) for p in self.base.live_peers(among=group)]

    def barrier(self) -> None:
        """The base transport's barrier."""
        self.base.barrier()


def original_rank(transport: Transport) -> int:
    """This peer's rank on the outermost transport (through any :class:`SubRing`)."""
    while isinstance(transport, SubRing):
        transport = transport.base
    return transport.rank


# --------------------------------------------------------------------------- in-process


class InProcessNetwork:
    """K simulated peers in one process: one FIFO per (src, dst) pair, one thread per peer.

    ``drop_prob`` simulates dropouts: at each ``send`` a live peer drops out with that
    probability (it raises :class:`PeerDropped` there, and every later ``recv`` from it raises
    :class:`PeerDropped` on the receiver once its queue is drained). ``drop(rank)`` does the same
    on demand. The dropout decisions come from a seeded ``random.Random``: they are simulation
    events, not secrets. ``observer`` (e.g. :class:`dmhe.netmodel.SimulatedLinks`) is told of
    every message sent and received, on the peer's own thread.
    """

    def __init__(
        self,
        world_size: int,
        *,
        drop_prob: float = 0.0,
        seed: int | None = None,
        poll_interval: float = 0.05,
        observer: Any = None,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.world_size = world_size
        self.drop_prob = drop_prob
        # on_send(src, dst, nbytes) / on_recv(src, dst, nbytes), called on the peer's own thread
        # (dmhe.netmodel.SimulatedLinks advances simulated clocks there)
        self.observer = observer
        self._rng = random.Random(seed)
        self._poll = poll_interval
        self._queues: dict[tuple[int, int], queue.SimpleQueue[bytes]] = {}
        self._lock = threading.Lock()
        self._dropped: set[int] = set()
        self._gone: set[int] = set()  # permanent losses: revive_all keeps them out
        self._aborted = threading.Event()
        self._barrier = threading.Barrier(world_size)
        self.transports = [InProcessTransport(self, r) for r in range(world_size)]

    def _queue(self, src: int, dst: int) -> queue.SimpleQueue[bytes]:
        key = (src, dst)
        q = self._queues.get(key)
        if q is None:
            with self._lock:
                q = self._queues.setdefault(key, queue.SimpleQueue())
        return q

    @property
    def dropped(self) -> frozenset[int]:
        """The ranks that dropped out (until ``revive_all``)."""
        with self._lock:
            return frozenset(self._dropped)

    def drop(self, rank: int, *, permanent: bool = False) -> None:
        """Mark ``rank`` as dropped out now (and break the barrier). ``permanent``: the peer
        never comes back (a killed process); ``revive_all`` keeps it dropped."""
        with self._lock:
            self._dropped.add(rank)
            if permanent:
                self._gone.add(rank)
        # Peers waiting in a barrier would wait forever for the dropped one.
        self._barrier.abort()

    def _maybe_drop(self, rank: int) -> None:
        with self._lock:
            if rank in self._dropped:
                raise PeerDropped(rank)
            hit = self.drop_prob > 0.0 and self._rng.random() < self.drop_prob
        if hit:
            self.drop(rank)
            raise PeerDropped(rank)

    def revive_all(self) -> None:
        """Forget dropouts (a new round with a fresh set of live peers); peers dropped
        ``permanent`` stay out."""
        with self._lock:
            self._dropped = set(self._gone)
            self._queues.clear()
        self._barrier = threading.Barrier(self.world_size)
        self._aborted.clear()

    @property
    def gone(self) -> frozenset[int]:
        """The ranks dropped ``permanent``."""
        with self._lock:
            return frozenset(self._gone)

    def run(self, fn: Callable[[InProcessTransport], Any]) -> list[Any]:
        """Run ``fn(transport)`` for every peer on its own thread; return results by rank.

        A peer that drops out (raises :class:`PeerDropped` about itself) gets that exception as
        its result. If any peer raises anything else (including :class:`PeerDropped` about
        another peer), the others are released from their waits and the first such exception
        (in time) is re-raised here.
        """
        results: list[Any] = [None] * self.world_size
        errors: list[tuple[float, BaseException]] = []
        err_lock = threading.Lock()

        def body(rank: int) -> None:
            try:
                results[rank] = fn(self.transports[rank])
            except PeerDropped as exc:
                if exc.rank == rank:
                    # This peer itself dropped out: a simulated event, not a failure. Whether
                    # the others can finish without it is their protocol's business.
                    results[rank] = exc
                    return
                with err_lock:
                    errors.append((time.monotonic(), exc))
                self._aborted.set()
                self._barrier.abort()
            except BaseException as exc:
                with err_lock:
                    errors.append((time.monotonic(), exc))
                if not isinstance(exc, _NetworkAborted):
                    self._aborted.set()
                    self._barrier.abort()

        if self.world_size == 1:
            body(0)
        else:
            threads = [
                threading.Thread(target=body, args=(r,), name=f"dmhe-peer-{r}", daemon=True)
                for r in range(self.world_size)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            real = [e for e in errors if not isinstance(e[1], _NetworkAborted)]
            first = min(real or errors, key=lambda e: e[0])[1]
            self._aborted.clear()
            self._barrier.reset()
            raise first
        return results


class InProcessTransport(Transport):
    """One peer's view of an :class:`InProcessNetwork`. Counts payload bytes only (no framing)."""

    def __init__(self, network: InProcessNetwork, rank: int) -> None:
        super().__init__(rank, network.world_size)
        self.network = network

    def send(self, dst: int, payload: bytes) -> None:
        """Queue ``payload`` for peer ``dst`` (ordered per pair)."""
        self._check_peer(dst)
        self.network._maybe_drop(self.rank)
        data = bytes(payload)
        self.bytes_sent[dst] += len(data)
        if self.network.observer is not None:
            self.network.observer.on_send(self.rank, dst, len(data))
        self.network._queue(self.rank, dst).put(data)

    def send_control(self, dst: int, payload: bytes) -> None:
        """A control message: dropouts never strike here."""
        self._check_peer(dst)
        if self.rank in self.network.dropped:
            raise PeerDropped(self.rank)
        data = bytes(payload)
        self.bytes_sent[dst] += len(data)
        if self.network.observer is not None:
            self.network.observer.on_send(self.rank, dst, len(data))
        self.network._queue(self.rank, dst).put(data)

    def leave(self) -> None:
        """This peer drops out now."""
        self.network.drop(self.rank)
        raise PeerDropped(self.rank)

    def reachable_peers(self) -> list[int]:
        """Every peer not dropped ``permanent``."""
        gone = self.network.gone
        return [r for r in range(self.world_size) if r not in gone]

    def recv(self, src: int) -> bytes:
        """The next payload from peer ``src`` (blocks)."""
        self._check_peer(src)
        net = self.network
        q = net._queue(src, self.rank)
        while True:
            try:
                data = q.get(timeout=net._poll)
            except queue.Empty:
                if src in net.dropped:
                    raise PeerDropped(src) from None
                if net._aborted.is_set():
                    raise _NetworkAborted(f"peer {self.rank}: another peer failed") from None
                continue
            self.bytes_received[src] += len(data)
            if net.observer is not None:
                net.observer.on_recv(src, self.rank, len(data))
            return data

    def barrier(self) -> None:
        """Wait until every peer reaches the barrier."""
        try:
            self.network._barrier.wait()
        except threading.BrokenBarrierError:
            dropped = self.network.dropped
            if dropped:
                raise PeerDropped(min(dropped)) from None
            raise _NetworkAborted(f"peer {self.rank}: barrier broken") from None


def run_peers(k: int, fn: Callable[[Transport], Any], **network_kwargs: Any) -> list[Any]:
    """Run ``fn(transport)`` on K in-process peers (one thread each); results by rank."""
    return InProcessNetwork(k, **network_kwargs).run(fn)


# --------------------------------------------------------------------------- torch.distributed

# defined in its own module (bounded waits, loss agreement), imported here for existing callers
from dmhe.torch_transport import TorchDistributedTransport, WaitPolicy  # noqa: E402
