"""A network model: what a round would take on given links, from one process.

:class:`SimulatedLinks` plugs into :class:`~dmhe.transport.InProcessNetwork` (its ``observer``)
and keeps a *simulated* clock per peer instead of sleeping. A message of ``n`` bytes from
``src`` to ``dst`` departs at ``max(clock[src], link free)``, occupies the link for
``8n / bandwidth`` and arrives ``latency`` (plus jitter) after it has been put on the link; a
``recv`` moves the receiver's clock to ``max(own, arrival)``. Sends do not block the sender (as
with TCP buffers and ``isend``). The CPU time each peer's thread spends between its network
calls (``time.thread_time``) is added to its clock, so the round time is compute plus waiting.
A Lamport-style hop count per peer gives the sequential message steps of the critical path.

:class:`DelayedTransport` applies the same link model to a real transport by sleeping, to
check the prediction against measured ``torch.distributed`` runs. :func:`replay` evaluates the
same model on a schedule of aggregated steps without running the peers, for K up to 10,000.

Barriers are not timed. Jitter, loss and retransmission draws come from ``random.Random``
seeded per link: they are simulation events, not secrets.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dmhe.peercpu import WaitsUncounted
from dmhe.topologies import Op, collective_program
from dmhe.transport import InProcessNetwork, Transport

__all__ = [
    "PROFILES",
    "DelayedTransport",
    "LinkProfile",
    "SimResult",
    "SimulatedLinks",
    "get_profile",
    "predict_collective",
    "replay",
    "simulate",
]


@dataclass(frozen=True)
class LinkProfile:
    """One direction of a link: ``bandwidth`` in bit/s, one-way ``latency`` in s, extra latency
    uniform in ``[0, jitter]`` s, and a probability ``loss`` that a transmission is lost and
    sent again after ``rto`` s (default: two latencies plus 1 ms)."""

    name: str
    bandwidth: float
    latency: float
    jitter: float = 0.0
    loss: float = 0.0
    rto: float | None = None

    def __post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"link {self.name}: bandwidth must be > 0, got {self.bandwidth}")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError(f"link {self.name}: latency and jitter must be >= 0")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"link {self.name}: loss must be in [0, 1), got {self.loss}")
        if self.rto is not None and self.rto < 0:
            raise ValueError(f"link {self.name}: rto must be >= 0")

    def transfer(self, nbytes: int) -> float:
        """Seconds the link is busy sending ``nbytes``."""
        return 8.0 * nbytes / self.bandwidth

    def delivery(self, nbytes: int, rng: random.Random | None = None) -> tuple[float, float]:
        """``(seconds the link is busy, seconds from departure to arrival)`` for one message,
        drawing jitter and losses from ``rng`` when those are set."""
        busy = self.transfer(nbytes)
        extra = 0.0
        if rng is not None and self.jitter:
            extra += rng.uniform(0.0, self.jitter)
        if rng is not None and self.loss:
            rto = 2 * self.latency + 1e-3 if self.rto is None else self.rto
            while rng.random() < self.loss:
                extra += rto + busy
                busy += self.transfer(nbytes)
        return busy, busy + self.latency + extra


#: the link profiles of the scaling targets
PROFILES: dict[str, LinkProfile] = {
    "datacenter": LinkProfile("datacenter", 25e9, 0.05e-3),
    "regional": LinkProfile("regional", 1e9, 5e-3),
    "internet": LinkProfile("internet", 100e6, 20e-3),
}


def get_profile(link: LinkProfile | str | None) -> LinkProfile:
    """A :class:`LinkProfile` from itself, a name in :data:`PROFILES`, or None ("internet")."""
    if link is None:
        return PROFILES["internet"]
    if isinstance(link, LinkProfile):
        return link
    if link not in PROFILES:
        raise ValueError(f"unknown link profile {link!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[link]


class SimulatedLinks:
    """Per-peer simulated clocks for an :class:`InProcessNetwork` (pass it as ``observer``).

    ``link`` applies to every (src, dst) pair unless ``links`` names another profile for that
    pair. ``shared_uplink`` makes all of a peer's outgoing messages share one link (one NIC)
    instead of one per destination. ``header_bytes`` is added to every message (the framing a
    real transport puts on the wire: 8 for :class:`~dmhe.transport.TorchDistributedTransport`).
    ``measure_compute=False`` leaves compute out (network time only); ``compute_scale``
    multiplies it (a slower or faster CPU than this one). Call :meth:`reset` between rounds and
    after ``InProcessNetwork.revive_all`` (which drops queued messages the model still holds).
    """

    def __init__(
        self,
        world_size: int,
        link: LinkProfile | str | None = None,
        *,
        links: Mapping[tuple[int, int], LinkProfile] | None = None,
        shared_uplink: bool = False,
        header_bytes: int = 0,
        measure_compute: bool = True,
        compute_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if header_bytes < 0 or compute_scale < 0:
            raise ValueError("header_bytes and compute_scale must be >= 0")
        self.world_size = world_size
        self.link = get_profile(link)
        self.links = dict(links or {})
        self.shared_uplink = shared_uplink
        self.header_bytes = header_bytes
        self.measure_compute = measure_compute
        self.compute_scale = compute_scale
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Clocks, hop counts and link states back to zero (between rounds, peers idle)."""
        k = self.world_size
        self.clocks = [0.0] * k
        self.compute = [0.0] * k
        self.hops = [0] * k
        self.messages = [0] * k
        self._marks: list[float | None] = [None] * k
        self._free: dict[Any, float] = defaultdict(float)
        self._last_arrival: dict[tuple[int, int], float] = defaultdict(float)
        self._inflight: dict[tuple[int, int], deque[tuple[float, int]]] = defaultdict(deque)
        self._rngs: dict[tuple[int, int], random.Random] = {}
        self._lock = threading.Lock()

    # -- compute accounting (each peer's own thread) -----------------------------------------------
    def begin(self, rank: int) -> None:
        """This peer's thread starts its work now: compute is counted from here."""
        self._marks[rank] = time.thread_time()

    def end(self, rank: int) -> None:
        """This peer's work is done: count the compute since its last network call."""
        self._charge(rank)
        self._marks[rank] = None

    def pause(self, rank: int) -> None:
        """This peer's thread blocks now (a receive, a barrier): count its compute so far and
        none while it waits."""
        self._charge(rank)
        self._marks[rank] = None

    def resume(self, rank: int) -> None:
        """This peer's thread runs again: count compute from here."""
        self._marks[rank] = time.thread_time()

    def _charge(self, rank: int) -> None:
        mark = self._marks[rank]
        if self.measure_compute and mark is not None:
            spent = (time.thread_time() - mark) * self.compute_scale
            self.clocks[rank] += spent
            self.compute[rank] += spent

    def _remark(self, rank: int) -> None:
        # the model's own bookkeeping is not the peer's compute
        if self._marks[rank] is not None:
            self._marks[rank] = time.thread_time()

    # -- observer hooks ----------------------------------------------------------------------------
    def on_send(self, src: int, dst: int, nbytes: int) -> None:
        """A message of ``nbytes`` payload bytes leaves ``src`` for ``dst``."""
        self._charge(src)
        key = (src, dst)
        prof = self.links.get(key, self.link)
        rng = self._rngs.get(key)
        if rng is None and (prof.jitter or prof.loss):
            rng = self._rngs[key] = random.Random(f"{self.seed}:{src}:{dst}")
        lane = src if self.shared_uplink else key
        with self._lock:  # a shared uplink is touched by one thread, links by their sender
            depart = max(self.clocks[src], self._free[lane])
            busy, delay = prof.delivery(nbytes + self.header_bytes, rng)
            self._free[lane] = depart + busy
        # one ordered stream per pair (TCP): jitter never reorders a pair's messages
        arrival = max(depart + delay, self._last_arrival[key])
        self._last_arrival[key] = arrival
        self.messages[src] += 1
        self._inflight[key].append((arrival, self.hops[src] + 1))
        self._remark(src)

    def on_recv(self, src: int, dst: int, nbytes: int) -> None:
        """``dst`` takes the next message from ``src`` (in send order)."""
        self._charge(dst)
        arrival, hop = self._inflight[(src, dst)].popleft()
        self.clocks[dst] = max(self.clocks[dst], arrival)
        self.hops[dst] = max(self.hops[dst], hop)
        self._remark(dst)

    # -- results -----------------------------------------------------------------------------------
    def round_time(self) -> float:
        """Simulated seconds until the last peer is done."""
        return max(self.clocks)

    def steps(self) -> int:
        """Sequential message steps on the critical path (longest chain of messages)."""
        return max(self.hops)


@dataclass
class SimResult:
    """What :func:`simulate` returns: per-rank results, simulated time and traffic."""

    results: list[Any]
    round_time: float
    steps: int
    clocks: list[float]
    compute: list[float]
    bytes_sent: list[int]
    bytes_received: list[int]
    messages: list[int] = field(default_factory=list)


def simulate(
    k: int, fn: Callable[[Transport], Any], link: LinkProfile | str | None = None, **kwargs: Any
) -> SimResult:
    """Run ``fn(transport)`` on K in-process peers over simulated links (``kwargs`` go to
    :class:`SimulatedLinks`); the simulated round time covers all of ``fn``. Each peer's
    compute leaves out the time its thread is blocked in ``recv`` or ``barrier`` (see
    :class:`dmhe.peercpu.WaitsUncounted`)."""
    sim = SimulatedLinks(k, link, **kwargs)
    net = InProcessNetwork(k, observer=sim)

    def body(t: Transport) -> Any:
        sim.begin(t.rank)
        try:
            return fn(WaitsUncounted(t, sim))
        finally:
            sim.end(t.rank)

    results = net.run(body)
    ts = net.transports
    return SimResult(
        results=results,
        round_time=sim.round_time(),
        steps=sim.steps(),
        clocks=list(sim.clocks),
        compute=list(sim.compute),
        bytes_sent=[t.total_bytes_sent for t in ts],
        bytes_received=[t.total_bytes_received for t in ts],
        messages=list(sim.messages),
    )


class DelayedTransport(Transport):
    """A real transport whose messages arrive when ``link`` says (by sleeping on receive).

    Each payload carries its due time (8 bytes, ``time.monotonic``, which every process on one
    host shares): departure at ``max(now, link free)``, arrival ``delivery`` later, as in
    :class:`SimulatedLinks`. The receiver sleeps until then. Counters count the payload only;
    the inner transport's counters include the 8-byte stamp.
    """

    _STAMP = struct.Struct("<d")

    def __init__(self, inner: Transport, link: LinkProfile | str | None = None) -> None:
        super().__init__(inner.rank, inner.world_size)
        self.inner = inner
        self.link = get_profile(link)
        self._free: dict[int, float] = defaultdict(float)
        self._rng = random.Random(f"delayed:{inner.rank}")

    def send(self, dst: int, payload: bytes) -> None:
        """Stamp the due time and hand the message to the inner transport."""
        self._check_peer(dst)
        data = bytes(payload)
        depart = max(time.monotonic(), self._free[dst])
        rng = self._rng if (self.link.jitter or self.link.loss) else None
        busy, delay = self.link.delivery(len(data), rng)
        self._free[dst] = depart + busy
        self.bytes_sent[dst] += len(data)
        self.inner.send(dst, self._STAMP.pack(depart + delay) + data)

    def recv(self, src: int) -> bytes:
        """The next message from ``src``, no earlier than its due time."""
        self._check_peer(src)
        buf = self.inner.recv(src)
        (due,) = self._STAMP.unpack_from(buf)
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.bytes_received[src] += len(buf) - self._STAMP.size
        return buf[self._STAMP.size :]

    def barrier(self) -> None:
        """The inner transport's barrier (not delayed)."""
        self.inner.barrier()


# --------------------------------------------------------------------------- schedule replay


def replay(
    programs: list[list[Op]],
    link: LinkProfile | str | None = None,
    *,
    per_message: float = 0.0,
    per_byte: float = 0.0,
    per_op: float = 0.0,
    header_bytes: int = 0,
) -> tuple[list[float], list[int]]:
    """``(clock per peer, hops per peer)`` after running ``programs`` under the link model of
    :class:`SimulatedLinks` (no jitter or loss), with ``per_op + per_message * messages +
    per_byte * bytes`` seconds of compute charged to every op sent and received."""
    prof = get_profile(link)
    k = len(programs)
    clocks, hops, pc = [0.0] * k, [0] * k, [0] * k
    free: dict[tuple[int, int], float] = defaultdict(float)
    inflight: dict[tuple[int, int], deque[tuple[float, int]]] = defaultdict(deque)
    blocked: set[tuple[int, int]] = set()
    ready = deque(range(k))
    while ready:
        r = ready.popleft()
        prog = programs[r]
        while pc[r] < len(prog):
            what, peer, nbytes, nmsg = prog[pc[r]]
            cost = per_op + per_message * nmsg + per_byte * nbytes
            if what == "send":
                clocks[r] += cost
                depart = max(clocks[r], free[(r, peer)])
                busy = prof.transfer(nbytes + header_bytes * nmsg)
                free[(r, peer)] = depart + busy
                inflight[(r, peer)].append((depart + busy + prof.latency, hops[r] + 1))
                if (r, peer) in blocked:
                    blocked.discard((r, peer))
                    ready.append(peer)
            else:
                q = inflight[(peer, r)]
                if not q:
                    blocked.add((peer, r))
                    break
                arrival, hop = q.popleft()
                clocks[r] = max(clocks[r], arrival) + cost
                hops[r] = max(hops[r], hop)
            pc[r] += 1
    stuck = [r for r in range(k) if pc[r] < len(programs[r])]
    if stuck:
        raise RuntimeError(f"schedule deadlocks: peers {stuck[:8]} wait forever")
    return clocks, hops


def predict_collective(
    name: str,
    k: int,
    payload_bytes: int,
    link: LinkProfile | str | None = None,
    *,
    passes: int = 2,
    header_bytes: int = 0,
) -> float:
    """Predicted network seconds of ``passes`` alternating reduce-scatters and all-gathers of
    ``payload_bytes`` per peer (no compute). The ring is symmetric, so it is evaluated in
    closed form (every step costs one latency plus its largest chunk); halving is replayed."""
    if k < 1 or payload_bytes < 0 or passes < 0:
        raise ValueError("k >= 1, payload_bytes >= 0 and passes >= 0 required")
    prof = get_profile(link)
    if k == 1:
        return 0.0
    blocks = [len(c) for c in _split(payload_bytes, k)]
    if name == "ring":
        return passes * (k - 1) * (prof.latency + prof.transfer(max(blocks) + header_bytes))
    progs = [list[Op]() for _ in range(k)]
    for i in range(passes):
        step = collective_program(name, "rs" if i % 2 == 0 else "ag", k, blocks)
        for r in range(k):
            progs[r].extend(step[r])
    clocks, _ = replay(progs, prof, header_bytes=header_bytes)
    return max(clocks)


def _split(n: int, k: int) -> list[range]:
    """``n`` items in K contiguous parts differing by at most one (as ``numpy.array_split``)."""
    q, rem = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        size = q + (1 if i < rem else 0)
        out.append(range(start, start + size))
        start += size
    return out
