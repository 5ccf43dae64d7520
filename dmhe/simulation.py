"""K peers in one process, reproducibly: ``dmhe.simulate(K, fn)``.

Each peer runs ``fn(peer)`` on its own thread, with its own in-process transport; inside ``fn``,
:meth:`dmhe.SecureAggregationEngine.make_secure` finds that transport by itself (no
``transport=`` argument), exactly as it finds the process group under ``torchrun``.

Why the peers take turns: threads share torch's global random generator, so peers drawing from
it at the same time (model initialisation, ``DataLoader(shuffle=True)``, dropout) would see an
interleaving-dependent stream and the same script would give different accuracies. Here only
one peer runs Python at a time (a *baton*), handed over only while a peer waits for a message,
and each peer owns a private copy of torch's (and numpy's legacy) global generator state, swapped
in whenever it holds the baton. A peer's draws therefore depend only on its own code and the
seed: the same script gives the same result every time. ``peer.generator`` is a further
per-peer ``torch.Generator`` for code that takes one explicitly.

A peer whose ``fn`` returns tells the engine's optimizers it is done; a peer still waiting in an
``optimizer.step()`` then fails with :class:`dmhe.engine.StepMismatchError` naming both ranks
and their step counts. A peer that waits longer than ``timeout`` seconds for a message fails
the run, naming the peer it waited for, instead of hanging.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from dmhe.transport import InProcessNetwork, PeerDropped, Transport

__all__ = ["Peer", "SimulationTimeout", "current_peer", "simulate"]

T = TypeVar("T")

_local = threading.local()


class SimulationTimeout(RuntimeError):
    """A simulated peer waited longer than the simulation's timeout for another peer."""


def _peer_seed(seed: int, rank: int, purpose: int) -> int:
    data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in (seed, rank, purpose))
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


@dataclass
class Peer:
    """One simulated peer, as ``fn`` sees it."""

    rank: int
    world_size: int
    transport: Transport
    #: a torch generator of this peer's own (seeded from the simulation seed and the rank)
    generator: torch.Generator
    finishers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (collective) after ``fn`` returns on this peer."""
        self.finishers.append(callback)


def current_peer() -> Peer | None:
    """The simulated peer running on this thread, or None outside :func:`simulate`."""
    return getattr(_local, "peer", None)


class _Baton:
    """One peer runs at a time; each peer's global RNG state is its own."""

    def __init__(self, peers: int, seed: int) -> None:
        self._lock = threading.Lock()
        self._torch_state = [
            torch.Generator().manual_seed(_peer_seed(seed, r, 1)).get_state() for r in range(peers)
        ]
        self._np_state = [
            np.random.RandomState(_peer_seed(seed, r, 2) % 2**32).get_state() for r in range(peers)
        ]

    def acquire(self, rank: int) -> None:
        self._lock.acquire()
        torch.set_rng_state(self._torch_state[rank])
        np.random.set_state(self._np_state[rank])

    def release(self, rank: int) -> None:
        self._torch_state[rank] = torch.get_rng_state()
        self._np_state[rank] = np.random.get_state()
        self._lock.release()


class _TurnTakingTransport(Transport):
    """An in-process transport that hands the baton over while it waits."""

    def __init__(self, inner: Transport, baton: _Baton, waits: dict[Any, Any]) -> None:
        super().__init__(inner.rank, inner.world_size)
        self.inner, self._baton, self._waits = inner, baton, waits
        self.bytes_sent, self.bytes_received = inner.bytes_sent, inner.bytes_received

    def send(self, dst: int, payload: bytes) -> None:
        """The inner transport's send (never blocks)."""
        self.inner.send(dst, payload)

    def send_control(self, dst: int, payload: bytes) -> None:
        """The inner transport's control send."""
        self.inner.send_control(dst, payload)

    def leave(self) -> None:
        """The inner transport's leave."""
        self.inner.leave()

    def _waiting(self, fn: Callable[[], T], src: int | None) -> T:
        self._waits[self.rank] = (time.monotonic(), src)
        self._baton.release(self.rank)
        try:
            return fn()
        except PeerDropped as exc:
            timed_out = self._waits.get(("timeout", self.rank))
            if timed_out is not None:
                raise SimulationTimeout(timed_out) from None
            raise exc
        finally:
            self._waits.pop(self.rank, None)
            self._baton.acquire(self.rank)

    def recv(self, src: int) -> bytes:
        """The next payload from ``src``; other peers run while this one waits."""
        return self._waiting(lambda: self.inner.recv(src), src)

    def barrier(self) -> None:
        """Wait for every peer; other peers run meanwhile."""
        self._waiting(self.inner.barrier, None)


def _watch(network: InProcessNetwork, waits: dict[Any, Any], timeout: float, done: Any) -> None:
    """Release a peer that waits longer than ``timeout``: the peer it waits for is dropped, so
    its receive fails, and the failure is reported as a timeout naming both."""
    while not done.wait(min(1.0, timeout / 4)):
        now = time.monotonic()
        for rank, entry in list(waits.items()):
            if not isinstance(rank, int) or entry is None:
                continue
            since, src = entry
            if now - since > timeout:
                whom = f"peer {src}" if src is not None else "the other peers (barrier)"
                waits[("timeout", rank)] = (
                    f"peer {rank} waited {timeout:g} s for {whom}: the peers are out of step "
                    "(e.g. different numbers of optimizer.step() calls) or one is stuck"
                )
                network.drop(src if src is not None else rank)


def simulate(
    peers: int, fn: Callable[[Peer], T], *, seed: int = 0, timeout: float = 300.0
) -> list[T]:
    """Run ``fn(peer)`` for ``peers`` in-process peers; returns their results by rank.

    ``seed`` fixes every peer's global torch/numpy generator state and ``peer.generator``, so
    the same ``fn`` gives the same results on every call. ``timeout``: seconds a peer may wait
    for a message before the run fails naming it. The first peer's exception (in time) is
    re-raised here after the others are released.
    """
    if not isinstance(peers, int) or peers < 1:
        raise ValueError(f"simulate needs peers >= 1, got {peers!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    network = InProcessNetwork(peers)
    baton = _Baton(peers, seed)
    waits: dict[Any, Any] = {}
    outer_torch, outer_np = torch.get_rng_state(), np.random.get_state()

    def body(t: Transport) -> T:
        rank = t.rank
        peer = Peer(
            rank=rank,
            world_size=peers,
            transport=_TurnTakingTransport(t, baton, waits),
            generator=torch.Generator().manual_seed(_peer_seed(seed, rank, 3)),
        )
        baton.acquire(rank)
        _local.peer = peer
        try:
            result = fn(peer)
            for finish in peer.finishers:
                finish()
            return result
        finally:
            _local.peer = None
            baton.release(rank)

    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(network, waits, timeout, done), name="dmhe-watch", daemon=True
    )
    watcher.start()
    try:
        return network.run(body)
    finally:
        done.set()
        watcher.join()
        torch.set_rng_state(outer_torch)
        np.random.set_state(outer_np)
