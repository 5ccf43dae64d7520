"""One peer per process over ``torch.distributed``: bounded waits and survivable losses.

Every wait (a receive, a pending send, a barrier, a commit) is bounded by :class:`WaitPolicy`:
the set-up bound until a round has been measured, then ``--peer-timeout`` if given, else
``max(floor, factor x the slowest round so far)``. A killed process's sockets close, and gloo
wakes the operations pending on them with an error, so a killed peer is named at once; a peer
that merely stops answering is named when the bound expires. Either way
:class:`~dmhe.transport.PeerDropped` names it by rank, and the detector posts the loss on the
rendezvous store, so that every other peer stops waiting too and raises the same error.

Survivors then agree on the live set (:func:`agree_live_set`, run by
:meth:`TorchDistributedTransport.recover`): each survivor registers on the store under the failed
epoch and waits until every member is registered or *known dead*, or its bound expires; then it
proposes the registered set with an atomic compare-and-set, and every survivor adopts the value
that won, so all hold the same set. A timeout is no evidence of death (with blame chains the peers
downstream of a silent one time out too), nor is another peer's report; the only evidence is a
connection closed or reset by that peer (gloo wakes the operations pending on it), which the
peer that saw it posts on the store before it reports the loss. They form a fresh gloo group over
the agreed set (on its own store prefix, so nothing pending in the old group can be mistaken for
new traffic) and the lost rank is never contacted again: ranks keep their original numbers
(``world_size`` stays K) and sending to a lost rank raises ``PeerDropped``.

A round's result is kept only if every member holds it (:meth:`commit`): each member marks the
step done, and the outcome ("commit" or "abort") is decided once, by compare-and-set, so a loss
in the last message of a round cannot leave some survivors one round ahead of the others.

The store is torch.distributed's own (torchrun's agent hosts it; a plain ``env://`` launch hosts
it in rank 0's process, which must then survive).
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from typing import Any

from dmhe.liveness import _POLL_MAX, WaitPolicy, _short, agree_live_set, is_disconnect
from dmhe.transport import PeerDropped, Transport

__all__ = ["TorchDistributedTransport", "WaitPolicy", "agree_live_set", "is_disconnect"]

_MARK_AFTER = 0.5  # seconds of waiting after which a peer posts whom it waits for
_STORE_EVERY = 0.05  # seconds between looks at the store for a loss reported by another peer
_NOT_WAITING = "-1"  # a waiting mark is overwritten with this, never deleted (see _blame)


class TorchDistributedTransport(Transport):
    """One peer per process over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

    Every message is an 8-byte little-endian length header (an int64 tensor) followed by the
    payload as a uint8 tensor; both are counted. Sends are asynchronous so that a ring step,
    where every peer sends before it receives, cannot deadlock; pending sends are completed at
    the next ``barrier`` or ``flush``. After a loss the survivors' group is gloo on the CPU.
    """

    HEADER_BYTES = 8

    def __init__(
        self,
        *,
        device: str | None = None,
        group: Any = None,
        policy: WaitPolicy | None = None,
        store: Any = None,
    ) -> None:
        import torch
        import torch.distributed as dist
        from torch.distributed import distributed_c10d as c10d

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialised: launch with torchrun, or call "
                "torch.distributed.init_process_group first"
            )
        self._torch, self._dist = torch, dist
        self._pg = group if group is not None else c10d._get_default_group()
        super().__init__(dist.get_rank(group), dist.get_world_size(group))
        if device is None:
            # NCCL moves only GPU tensors: use this process's current GPU
            on_gpu = dist.get_backend(group) == "nccl"
            self.device = torch.device(torch.cuda.current_device() if on_gpu else "cpu")
        else:
            self.device = torch.device(device)
        self._world = self.world_size  # processes in the launch
        self._base_store = store if store is not None else c10d._get_default_store()
        self._store = dist.PrefixStore("dmhe", self._base_store)
        self.policy = policy or WaitPolicy()
        self.slowest_round: float | None = None
        self.epoch = 0
        self._members = list(range(self.world_size))
        self._index = {m: m for m in self._members}  # a member's rank in the current group
        self._launch_rank = self.rank  # this process's rank in the launch (store host: 0)
        self._pending: list[tuple[Any, Any, int]] = []
        self._barriers = 0
        self._next_store_look = 0.0
        self._departed = False

    # -- membership and bounds --------------------------------------------------------------------
    def reachable_peers(self) -> list[int]:
        """The original ranks of the current group (every rank until a loss was agreed)."""
        return list(self._members)

    def live_peers(self, among: list[int] | None = None) -> list[int]:
        """The agreed members among ``among``: across processes a loss is agreed through
        :meth:`recover`, never by one peer's view, so no exchange is needed."""
        group = range(self.world_size) if among is None else among
        return sorted(p for p in group if p in self._members)

    def wait_bound(self) -> float:
        """Seconds any single wait may take now (see :class:`WaitPolicy`)."""
        return self.policy.bound(self.slowest_round)

    def round_time(self, seconds: float) -> None:
        """Record a finished round's wall time (the derived bound follows the slowest)."""
        self.slowest_round = max(self.slowest_round or 0.0, float(seconds))

    def _group_rank(self, peer: int) -> int:
        self._check_peer(peer)
        try:
            return self._index[peer]
        except KeyError:
            raise PeerDropped(peer, f"peer {peer} was lost earlier in this run") from None

    def adopt_identities(self, peer: int, peers: int, launch_ranks: dict[int, int]) -> None:
        """Act as original peer ``peer`` of a run of ``peers`` (a restart with fewer processes,
        :mod:`dmhe.restart`): ``launch_ranks`` maps each original peer taken over to the launch
        rank of its process; the originals not in it are lost (as after :meth:`recover`)."""
        if launch_ranks.get(peer) != self._launch_rank or len(launch_ranks) != self._world:
            raise ValueError(f"identities {launch_ranks} do not match launch rank {self.rank}")
        if not all(0 <= p < peers for p in launch_ranks) or self.epoch or self._barriers:
            raise ValueError("identities are adopted once, before any message, within 0..K-1")
        self.rank, self.world_size = peer, peers
        self._members = sorted(launch_ranks)
        self._index = dict(launch_ranks)

    # -- loss reports on the store ----------------------------------------------------------------
    def _key(self, *parts: object, epoch: int | None = None) -> str:
        """A store key of this epoch (or of ``epoch``)."""
        return "/".join([f"e{self.epoch if epoch is None else epoch}", *map(str, parts)])

    def _report(self, peer: int, why: str, exc: BaseException | None = None) -> PeerDropped:
        """Post the loss (first report wins) and return the error every peer will raise.
        ``exc``: the transport error behind it; a closed connection is posted first as direct
        evidence that ``peer`` is gone (see :func:`agree_live_set`)."""
        if exc is not None and is_disconnect(exc):
            self._store.set(self._key("dead", peer), json.dumps({"by": self.rank, "why": why}))
        value = json.dumps({"rank": peer, "by": self.rank, "why": why})
        won = self._store.compare_set(self._key("lost"), "", value)
        return self._reported(won)

    @staticmethod
    def _loss(raw: Any) -> dict[str, Any]:
        """A posted loss report: ``rank`` (the lost peer), ``by``, ``why``."""
        return dict(json.loads(raw.decode() if isinstance(raw, bytes) else raw))

    def _reported(self, raw: Any) -> PeerDropped:
        info = self._loss(raw)
        by = "" if info["by"] == self.rank else f", reported by peer {info['by']}"
        return PeerDropped(int(info["rank"]), f"peer {info['rank']} lost: {info['why']}{by}")

    def _look(self, force: bool = False) -> None:
        """Raise the loss another peer reported, if any (throttled: the store is shared)."""
        now = time.monotonic()
        if not force and now < self._next_store_look:
            return
        self._next_store_look = now + _STORE_EVERY
        key = self._key("lost")
        if self._store.check([key]):
            raise self._reported(self._store.get(key))

    def _wait(self, work: Any, peer: int, what: str) -> None:
        """Wait for ``work`` (an operation with ``peer``) within the bound.

        gloo completes a point-to-point operation only inside ``wait()``, and a ``wait`` with
        a timeout closes the pair when it expires; so a helper thread waits without one (it
        releases the GIL; gloo wakes it with an error when the peer's connection closes) while
        this one watches the bound and the store."""
        done, failed = threading.Event(), []

        def waiter() -> None:
            try:
                work.wait()
            except BaseException as exc:  # noqa: BLE001 (handed to the watching thread)
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=waiter, name="dmhe-wait", daemon=True).start()
        bound = self.wait_bound()
        start = time.monotonic()
        pause, marked = 0.0002, False
        try:
            while not done.wait(pause):
                self._look()
                waited = time.monotonic() - start
                if not marked and waited > _MARK_AFTER:
                    self._store.set(self._key("waiting", self.rank), str(peer))
                    marked = True
                if waited > bound:
                    silent = self._blame(peer)
                    via = "" if silent == peer else f" (peer {peer} waits for it)"
                    raise self._report(silent, f"no answer within {bound:.1f} s{via}")
                pause = min(2 * pause, _POLL_MAX)
        finally:
            if marked:  # overwritten, not deleted: a peer's check-then-get must not block
                self._store.set(self._key("waiting", self.rank), _NOT_WAITING)
        if failed:
            raise self._report(peer, f"{what} failed ({_short(failed[0])})", failed[0]) from None

    def _blame(self, peer: int) -> int:
        """The peer at the end of the chain of waits starting at ``peer``: a peer that waits
        for another is not the silent one (with all bounds alike, the peers downstream of a
        silent one time out together and would otherwise name their live neighbours)."""
        seen = {self.rank}
        while peer not in seen:
            key = self._key("waiting", peer)
            if not self._store.check([key]):
                return peer
            seen.add(peer)
            nxt = int(self._store.get(key))
            if nxt < 0:  # it waited, and no longer does
                return peer
            if nxt in seen:  # a cycle of waits: no silent end, name the one awaited
                return peer
            peer = nxt
        return peer

    # -- messages ---------------------------------------------------------------------------------
    def send(self, dst: int, payload: bytes) -> None:
        """Queue ``payload`` for peer ``dst`` (ordered per pair)."""
        g = self._group_rank(dst)
        torch = self._torch
        data = bytes(payload)
        header = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        tensors = [header]
        if data:
            tensors.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device))
        for t in tensors:
            try:
                self._pending.append((self._pg.send([t], g, 0), t, dst))
            except RuntimeError as exc:
                raise self._report(dst, f"send failed ({_short(exc)})", exc) from None
        self.bytes_sent[dst] += self.HEADER_BYTES + len(data)
        self._pending = [p for p in self._pending if not p[0].is_completed()]

    def recv(self, src: int) -> bytes:
        """The next payload from peer ``src`` (blocks, within the bound)."""
        g = self._group_rank(src)
        torch = self._torch
        header = torch.empty(1, dtype=torch.int64, device=self.device)
        try:
            work = self._pg.recv([header], g, 0)
        except RuntimeError as exc:
            raise self._report(src, f"receive failed ({_short(exc)})", exc) from None
        self._wait(work, src, "receive")
        n = int(header.item())
        self.bytes_received[src] += self.HEADER_BYTES + n
        if n == 0:
            return b""
        body = torch.empty(n, dtype=torch.uint8, device=self.device)
        try:
            work = self._pg.recv([body], g, 0)
        except RuntimeError as exc:
            raise self._report(src, f"receive failed ({_short(exc)})", exc) from None
        self._wait(work, src, "receive")
        return body.cpu().numpy().tobytes()

    def flush(self) -> None:
        """Wait for every pending send to complete (within the bound)."""
        pending, self._pending = self._pending, []
        for work, _, dst in pending:
            self._wait(work, dst, "send")

    # -- agreement on the store -------------------------------------------------------------------
    def _await_all(self, prefix: str, what: str) -> tuple[str, list[int]]:
        """Mark this peer under ``prefix`` and wait until every member has, or the bound
        expires, or a loss is reported; the outcome ("commit"/"abort") is decided once for
        all by compare-and-set. Returns ``(outcome, members missing when it was decided)``."""
        store = self._store
        store.set(f"{prefix}/{self.rank}", "1")
        keys = [f"{prefix}/{m}" for m in self._members]
        outcome_key = f"{prefix}/outcome"
        bound = self.wait_bound()
        start, pause = time.monotonic(), 0.0005
        while True:
            if store.check(keys):
                decided = store.compare_set(outcome_key, "", "commit")
            elif store.check([outcome_key]):
                decided = store.get(outcome_key)
            elif store.check([self._key("lost")]) or time.monotonic() - start > bound:
                decided = store.compare_set(outcome_key, "", "abort")
            else:
                time.sleep(pause)
                pause = min(2 * pause, _POLL_MAX)
                continue
            outcome = decided.decode() if isinstance(decided, bytes) else str(decided)
            missing = [m for m, k in zip(self._members, keys, strict=True) if not store.check([k])]
            if outcome == "commit":
                return outcome, []
            self._look(force=True)  # a reported loss names the peer better than a count
            lost = missing[0] if missing else self.rank
            raise self._report(lost, f"no {what} within {bound:.1f} s (missing: {missing})")

    def barrier(self) -> None:
        """Wait until every member reaches the barrier (pending sends completed first)."""
        self.flush()
        self._barriers += 1
        self._await_all(self._key("barrier", self._barriers), "barrier")

    def commit(self, tag: str) -> None:
        """Keep this step's result only if every member holds it; else ``PeerDropped``."""
        self.flush()
        self._await_all(self._key("commit", tag), f"commit of {tag}")

    def close(self) -> None:
        """Complete the pending sends, meet the other members at a last barrier, and let
        launch rank 0 (which hosts the store in a plain ``env://`` launch) leave last: a store that
        vanished under a peer still polling it would fail that peer's exit."""
        self.barrier()
        self._store.set(self._key("left", self.rank), "1")
        if self._launch_rank != 0:
            return
        keys = [self._key("left", m) for m in self._members]
        deadline = time.monotonic() + self.wait_bound()
        while not self._store.check(keys) and time.monotonic() < deadline:
            time.sleep(0.01)

    def depart(self) -> None:
        """Leave after a failure (a lost peer, a refused round): post this peer's departure,
        and let launch rank 0, which hosts the store in a plain ``env://`` launch, wait within
        the bound until every other member has departed too or is the one reported lost.
        Without it the host's exit could reset the store under a survivor that had not yet
        read the loss, which would then stop with "Connection reset by peer" instead of the
        lost peer's name. A store already gone is not an error here: nothing is left to tell.
        Once per process."""
        if self._departed:
            return
        self._departed = True
        try:
            self._store.set(f"departed/{self.rank}", "1")
            if self._launch_rank != 0:
                return
            deadline = time.monotonic() + self.wait_bound()
            while time.monotonic() < deadline:
                lost = self._lost_ranks()
                keys = [f"departed/{m}" for m in self._members if m != self.rank and m not in lost]
                if not keys or self._store.check(keys):
                    return
                time.sleep(0.01)
        except RuntimeError:
            return

    def _lost_ranks(self) -> set[int]:
        """The peers reported lost in any epoch of this run so far."""
        keys = [self._key("lost", epoch=e) for e in range(self.epoch + 1)]
        return {int(self._loss(self._store.get(k))["rank"]) for k in keys if self._store.check([k])}

    @property
    def lost_any(self) -> bool:
        """Whether a loss was survived (the original group then holds closed pairs, which
        gloo cannot tear down cleanly: the process should leave with ``os._exit``)."""
        return self.epoch > 0

    def recover(self, failure: PeerDropped) -> list[int]:
        """Agree with the other survivors on the live set and continue over it; returns it.

        Raises ``PeerDropped`` about this peer if the others decided without it (it was too
        slow to register), so that it stops instead of talking to a group it is not in. The
        agreement and why it is right: :func:`agree_live_set`.
        """
        torch, dist = self._torch, self._dist
        try:
            self._report(failure.rank, str(failure))
        except PeerDropped:
            pass
        bound = self.wait_bound()
        live = agree_live_set(
            self._store,
            self._key("recover"),
            self._members,
            self.rank,
            bound,
            dead=self._key("dead"),
        )
        if self.rank not in live:
            raise PeerDropped(self.rank, f"peer {self.rank}: the survivors went on without it")
        self._pending = []
        self.epoch += 1
        self._members = [int(m) for m in live]
        self._index = {m: i for i, m in enumerate(self._members)}
        group_store = dist.PrefixStore(f"dmhe-group/e{self.epoch}", self._base_store)
        timeout = datetime.timedelta(seconds=bound)
        self._pg = dist.ProcessGroupGloo(
            group_store, self._members.index(self.rank), len(self._members), timeout
        )
        self.device = torch.device("cpu")
        return list(self._members)
