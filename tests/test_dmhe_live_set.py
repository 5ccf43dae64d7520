"""The survivors' live-set agreement (dmhe.torch_transport.agree_live_set), on a fake store and a
fake clock, in the orders that broke the first version: a blame chain (rank 0 timed out waiting on
rank 2, which waits on the silent rank 1) must not leave the live rank 2 out."""

from __future__ import annotations

import json

import pytest

import dmhe.transport  # noqa: F401 (dmhe.torch_transport is loaded through it)
from dmhe.torch_transport import TorchDistributedTransport, agree_live_set, is_disconnect

BOUND = 1.5


class FakeStore:
    """The store calls agree_live_set makes, on a fake clock: ``sleep`` advances it and fires
    the events scheduled until then (other peers registering, evidence being posted)."""

    def __init__(self, events: list[tuple[float, str]] = ()) -> None:
        self.data: dict[str, str] = {}
        self.now = 0.0
        self.events = sorted(events)

    def clock(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.now += dt
        while self.events and self.events[0][0] <= self.now:
            self.set(self.events.pop(0)[1], "1")

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)

    def get(self, key: str) -> bytes:
        return self.data[key].encode()  # a real store would block on a missing key

    def compare_set(self, key: str, expected: str, desired: str) -> bytes:
        if key not in self.data and expected == "":
            self.data[key] = desired
        return self.data.get(key, expected).encode()


def _agree(store: FakeStore, me: int, members=(0, 1, 2)) -> list[int]:
    return agree_live_set(
        store, "e0/recover", list(members), me, BOUND, dead="e0/dead",
        clock=store.clock, sleep=store.sleep,
    )  # fmt: skip


def test_blame_chain_the_live_peer_that_registers_late_is_kept():
    # rank 0 timed out on rank 2 (which waits on the silent rank 1); the store's loss report
    # names rank 1; rank 2 registers 0.4 s after rank 0: neither the timeout nor the report is
    # evidence, so rank 0 waits for the bound and keeps rank 2
    store = FakeStore([(0.4, "e0/recover/2")])
    store.set("e0/lost", json.dumps({"rank": 1, "by": 2, "why": "no answer within 1.5 s"}))
    assert _agree(store, 0) == [0, 2]
    assert store.now > BOUND  # nothing but evidence may cut the wait for the silent rank 1
    assert _agree(store, 2) == [0, 2]  # rank 2 adopts the same set


def test_evidence_of_a_closed_connection_ends_the_wait_early():
    store = FakeStore([(0.2, "e0/dead/1"), (0.3, "e0/recover/2")])
    assert _agree(store, 0) == [0, 2]
    assert store.now < 0.5


def test_a_registered_peer_is_kept_even_with_evidence_against_it():
    store = FakeStore([(0.1, "e0/dead/2"), (0.3, "e0/recover/2"), (0.35, "e0/dead/1")])
    assert _agree(store, 0) == [0, 2]


def test_a_peer_later_than_the_bound_is_left_out_and_sees_it():
    store = FakeStore([(BOUND + 1.0, "e0/recover/2")])
    assert _agree(store, 0) == [0]
    store.now = BOUND + 1.0
    assert 2 not in _agree(store, 2)  # it adopts the decided set: recover() then stops it


@pytest.mark.parametrize(
    "message, evidence",
    [
        ("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4242", True),
        ("[pair.cc:598] Read error [127.0.0.1]:4242: Connection reset by peer", True),
        ("Timed out waiting 1800000ms for recv operation to complete", False),
    ],
)
def test_only_a_closed_connection_is_evidence(message, evidence):
    assert is_disconnect(RuntimeError(message)) is evidence


def test_blame_follows_the_chain_and_stops_at_a_peer_that_no_longer_waits():
    t = object.__new__(TorchDistributedTransport)  # only the store and the epoch are used
    t._store, t.epoch, t.rank = FakeStore(), 0, 0
    t._store.set("e0/waiting/2", "1")  # rank 2 waits on the silent rank 1
    assert t._blame(2) == 1
    t._store.set("e0/waiting/2", "-1")  # it stopped waiting: its mark is overwritten, not gone
    assert t._blame(2) == 2


def _departing(store: FakeStore, launch_rank: int, monkeypatch, members=(0, 1, 2, 3)):
    import dmhe.torch_transport as tt

    class FakeTime:  # depart's clock is the store's: sleeping fires the scheduled events
        monotonic = staticmethod(store.clock)
        sleep = staticmethod(store.sleep)

    monkeypatch.setattr(tt, "time", FakeTime)
    t = object.__new__(TorchDistributedTransport)  # only the store, epoch and members are used
    t._store, t.epoch, t.rank, t._launch_rank = store, 0, launch_rank, launch_rank
    t._members, t._departed = list(members), False
    t.policy, t.slowest_round = tt.WaitPolicy(fixed=BOUND, setup=BOUND), None
    return t


def test_the_store_host_leaves_a_failed_run_after_the_survivors(monkeypatch):
    # peer 2 was lost; peers 1 and 3 read the loss late (0.3 s, 0.6 s): the host (launch rank 0),
    # whose exit takes the store with it, waits for both, not for the lost one
    store = FakeStore([(0.3, "departed/1"), (0.6, "departed/3")])
    store.set("e0/lost", json.dumps({"rank": 2, "by": 1, "why": "receive failed"}))
    host = _departing(store, 0, monkeypatch)
    host.depart()
    assert 0.6 <= store.now < BOUND and store.check(["departed/0"])
    host.depart()  # once per process
    assert store.now < BOUND


def test_a_departing_non_host_does_not_wait_and_a_silent_peer_costs_the_bound(monkeypatch):
    store = FakeStore()
    _departing(store, 1, monkeypatch).depart()
    assert store.now == 0.0 and store.check(["departed/1"])
    _departing(store, 0, monkeypatch).depart()  # peers 2 and 3 never leave, none reported lost
    assert BOUND <= store.now < BOUND + 0.1
