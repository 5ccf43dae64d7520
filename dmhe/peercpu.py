"""One peer's CPU time per round, without the K-1 others of an in-process simulation.

K peers as threads of one process share one CPU cache and one GIL: a thread blocked in ``recv``
burns CPU on the others' behalf (GIL hand-offs, the queue's polling), and at large K every
peer's buffers evict every other's, so the same bytes cost more than on K machines. Two tools
leave those out:

* :class:`WaitsUncounted` (used by :func:`dmhe.netmodel.simulate`): a peer's transport whose
  blocking waits are not counted as the peer's compute;
* :func:`peer_cpu`: records what chosen peers receive in one K-peer run, then runs each of
  them alone against a transport that replays those messages (sends are dropped), and reports
  its thread CPU time: the work one peer does per round, as on its own machine.

Where a K-peer run is too costly (an encrypted round at K = 1000), the messages are built
instead (``benchmarks/profile_peer_cpu.py encrypted``); :func:`reduce_scatter_senders` gives
whose contributions each of them must hold.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dmhe.transport import InProcessNetwork, Transport

if TYPE_CHECKING:
    from dmhe.collectives import Scheduled

__all__ = ["WaitsUncounted", "peer_cpu", "reduce_scatter_senders"]


class _Clock:
    """What :class:`WaitsUncounted` needs of a clock (``dmhe.netmodel.SimulatedLinks``)."""

    def pause(self, rank: int) -> None: ...

    def resume(self, rank: int) -> None: ...


class WaitsUncounted(Transport):
    """``inner`` with ``clock.pause(rank)`` / ``clock.resume(rank)`` around every blocking
    wait (``recv``, ``barrier``); everything else, counters included, is the inner's."""

    def __init__(self, inner: Transport, clock: Any) -> None:
        super().__init__(inner.rank, inner.world_size)
        self.inner = inner
        self._clock = clock
        self.bytes_sent = inner.bytes_sent
        self.bytes_received = inner.bytes_received

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send(self, dst: int, payload: bytes) -> None:
        """The inner transport's send."""
        self.inner.send(dst, payload)

    def send_control(self, dst: int, payload: bytes) -> None:
        """The inner transport's control message."""
        self.inner.send_control(dst, payload)

    def recv(self, src: int) -> bytes:
        """The inner transport's receive, its wait not counted."""
        self._clock.pause(self.rank)
        try:
            return self.inner.recv(src)
        finally:
            self._clock.resume(self.rank)

    def barrier(self) -> None:
        """The inner transport's barrier, its wait not counted."""
        self._clock.pause(self.rank)
        try:
            self.inner.barrier()
        finally:
            self._clock.resume(self.rank)

    def leave(self) -> None:
        """The inner transport's dropout."""
        self.inner.leave()


class _Recording(WaitsUncounted):
    """Keeps every payload received, per source, in order."""

    def __init__(self, inner: Transport, log: dict[int, deque[bytes]]) -> None:
        super().__init__(inner, _Clock())
        self.log = log

    def recv(self, src: int) -> bytes:
        data = self.inner.recv(src)
        self.log[src].append(data)
        return data


class _Replayed(Transport):
    """A peer alone: ``recv`` hands out the recorded payloads, ``send`` only counts."""

    def __init__(self, rank: int, world_size: int, log: dict[int, deque[bytes]]) -> None:
        super().__init__(rank, world_size)
        self._log = {src: deque(q) for src, q in log.items()}

    def send(self, dst: int, payload: bytes) -> None:
        """Counted, then dropped."""
        self._check_peer(dst)
        self.bytes_sent[dst] += len(payload)

    def recv(self, src: int) -> bytes:
        """The next recorded payload from ``src``."""
        self._check_peer(src)
        q = self._log.get(src)
        if not q:
            raise RuntimeError(f"peer {self.rank}: the replayed run receives more from {src}")
        data = q.popleft()
        self.bytes_received[src] += len(data)
        return data

    def barrier(self) -> None:
        """Alone: nothing to wait for."""


def peer_cpu(
    k: int, fn: Callable[[Transport], Any], ranks: Sequence[int] = (0,), reps: int = 3
) -> dict[int, float]:
    """Median thread CPU seconds of ``fn(transport)`` on each of ``ranks``, run alone ``reps``
    times on the messages it received in one K-peer in-process run of ``fn``. ``fn`` must send
    and receive the same messages on every run (no randomness in what travels)."""
    if reps < 1 or not ranks or any(not 0 <= r < k for r in ranks):
        raise ValueError(f"need reps >= 1 and ranks in [0, {k})")
    logs: dict[int, dict[int, deque[bytes]]] = {r: defaultdict(deque) for r in ranks}

    def body(t: Transport) -> None:
        fn(_Recording(t, logs[t.rank]) if t.rank in logs else t)

    InProcessNetwork(k).run(body)
    out: dict[int, float] = {}
    for r in ranks:
        times = []
        for _ in range(reps):
            t = _Replayed(r, k, logs[r])
            gc.collect()
            t0 = time.thread_time()
            fn(t)
            times.append(time.thread_time() - t0)
            if any(t._log.values()):
                raise RuntimeError(f"peer {r}: the replayed run received less than recorded")
        out[r] = statistics.median(times)
    return out


def _in_runs(c: int, runs: tuple[tuple[int, int], ...], k: int) -> bool:
    return any((c - s) % k < n for s, n in runs)


def reduce_scatter_senders(
    topo: Scheduled, k: int, indices: Sequence[int], rank: int
) -> list[dict[int, int]]:
    """Whose contributions each message ``rank`` receives in ``topo``'s reduce-scatter holds:
    per received step, ``{chunk index: bitset of peers}`` for the chunks of ``indices`` in it
    (e.g. the non-empty chunks of an encrypted round, whose decryption-share frames carry their
    sender sets). All K peers run their steps on sets instead of data, in rounds, until every
    step is done (a deadlocked schedule raises)."""
    steps = [topo.reduce_scatter_steps(k, p)[0] for p in range(k)]
    held = [dict.fromkeys(indices, 1 << p) for p in range(k)]
    queues: dict[tuple[int, int], deque[dict[int, int]]] = defaultdict(deque)
    pos, left = [0] * k, sum(1 for s in steps if s)
    got: list[dict[int, int]] = []
    while left:
        moved = False
        for p in range(k):
            while pos[p] < len(steps[p]):
                what, peer, runs = steps[p][pos[p]]
                idx = [c for c in indices if _in_runs(c, runs, k)]
                if what == "send":
                    queues[(p, peer)].append({c: held[p][c] for c in idx})
                else:
                    q = queues[(peer, p)]
                    if not q:
                        break
                    msg = q.popleft()
                    if p == rank:
                        got.append(msg)
                    for c, senders in msg.items():
                        held[p][c] = held[p][c] | senders if what == "fold" else senders
                pos[p] += 1
                moved = True
                if pos[p] == len(steps[p]):
                    left -= 1
        if not moved:
            raise RuntimeError(f"{topo.name}: the schedule deadlocks at K={k}")
    return got
