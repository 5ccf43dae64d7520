"""Survivors restarted with fewer processes (dmhe.restart), without processes: the claim of one
original identity per process on a store, the plan every process derives from the same table
(below t: exit 2; the newest round every identity holds), the previous checkpoint kept, and an
in-process restart over 3 of 4 identities that reloads their keys and decrypts t-of-K with the
Shamir points of the ORIGINAL peers. The 4-process kill -9 + restart run is
tests/test_dmhe_restart_procs.py::test_survivors_restarted_with_a_smaller_world_finish_the_run."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dmhe.aggregators.encrypted import EncryptedAggregator
from dmhe.aggregators.encrypted_keystore import KEYS
from dmhe.config import ConfigError
from dmhe.dropouts import live_round
from dmhe.restart import Held, claim_identity, held_identities, plan_restart
from dmhe.rundir import PREVIOUS, RunDir
from dmhe.transport import InProcessNetwork, PeerDropped

K, T = 4, 3


def _save(out, peer: int, rnd: int, members=None) -> None:
    payload = {"round": rnd, "config": {"peers": K, "threshold": T, "rounds": 9}}
    payload["model"] = {"w": torch.full((2,), float(rnd))}
    if members is not None:
        payload["members"] = members
    RunDir(out, rank=peer).save_checkpoint(payload)


def _held(**rounds: list[int]) -> dict[int, Held]:
    return {int(p[1:]): Held(int(p[1:]), tuple(r), (0, 1, 3), K, T) for p, r in rounds.items()}


def test_a_process_peer_keeps_its_previous_checkpoint_and_loads_either(tmp_path):
    for rnd in (1, 2, 3):
        _save(tmp_path, 1, rnd)
    rd = RunDir(tmp_path, rank=1)
    assert [c["round"] for c in rd.checkpoints("cpu")] == [3, 2]
    assert (rd.checkpoint_dir / PREVIOUS).exists()
    assert rd.load_checkpoint("cpu")["round"] == 3
    assert torch.equal(rd.load_checkpoint("cpu", round=2)["model"]["w"], torch.full((2,), 2.0))
    with pytest.raises(ConfigError, match="no checkpoint of round 1"):
        rd.load_checkpoint("cpu", round=1)


def test_held_identities_leave_out_the_peer_lost_for_good(tmp_path):
    _save(tmp_path, 2, 2)  # killed after round 2: its checkpoint says all four were live
    for p in (0, 1, 3):
        _save(tmp_path, p, 4, members=[0, 1, 3])
        _save(tmp_path, p, 5, members=[0, 1, 3])
    (tmp_path / "rank-7.log").write_text("")  # not a folder
    held = held_identities(tmp_path)
    assert sorted(held) == [0, 1, 2, 3] and held[2].members == (0, 1, 2, 3)
    store = dist.HashStore()
    plans: dict[int, object] = {}

    def proc(rank: int) -> None:
        plans[rank] = claim_identity(store, rank, 3, held, bound=10.0)

    threads = [threading.Thread(target=proc, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peers = sorted(p.peer for p in plans.values())
    assert peers == [0, 1, 3]  # one identity each, never the lost peer 2, never twice
    for rank, p in plans.items():
        assert p.round == 5 and p.peers == K and p.members == [0, 1, 3]
        assert p.launch_ranks[p.peer] == rank and p.launch_ranks == plans[0].launch_ranks


def test_the_fourth_process_finds_no_identity_and_every_process_stops(tmp_path):
    store = dist.HashStore()
    held = _held(p0=[5, 4], p1=[5, 4], p3=[5, 4])
    errors: list[str] = []

    def proc(rank: int) -> None:
        try:
            claim_identity(store, rank, 4, held, bound=10.0)
        except ConfigError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=proc, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and len(set(errors)) == 1  # the same one line everywhere
    assert "found no original peer to act for" in errors[0]


def _claim_all(store, world: int, held) -> list:
    """``claim_identity`` on ``world`` threads (launch ranks): each one's plan or ConfigError."""
    out: list = [None] * world

    def proc(rank: int) -> None:
        try:
            out[rank] = claim_identity(store, rank, world, held, bound=10.0)
        except ConfigError as exc:
            out[rank] = exc

    threads = [threading.Thread(target=proc, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_damaged_checkpoint_is_reported_by_the_process_of_its_rank(tmp_path):
    for p in range(3):
        _save(tmp_path, p, 2)
    path = tmp_path / "rank-1" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:-64])
    held = held_identities(tmp_path)
    assert held[1].error is not None and held[0].error is None
    got = _claim_all(dist.HashStore(), 3, held)
    assert all(isinstance(e, ConfigError) for e in got) and len({str(e) for e in got}) == 1
    assert "rank 1: checkpoint" in str(got[0]) and "unreadable" in str(got[0])


def _entry(peer, rounds, *, k=K, t=T, held=(0, 1, 3), wanted=None):
    return {"peer": peer, "rounds": rounds, "peers": k, "threshold": t, "held": list(held),
            "wanted": wanted}  # fmt: skip


def test_plan_resumes_from_the_newest_round_every_identity_holds():
    table = [_entry(0, [5, 4]), _entry(3, [4, 3]), _entry(1, [5, 4])]
    plan = plan_restart(table, 1)
    assert plan is not None and (plan.peer, plan.round, plan.members) == (3, 4, [0, 1, 3])
    assert plan.launch_ranks == {0: 0, 3: 1, 1: 2}


@pytest.mark.parametrize(
    "table, message",
    [
        ([_entry(0, [5, 4]), _entry(1, [5, 4])], r"2 of 4 original peers \(\[0, 1\]\) .* 3 needed"),
        ([_entry(0, [5, 4], t=None), _entry(1, [5, 4], t=None), _entry(3, [5, 4], t=None)],
         "3 needed|4 needed"),
        ([_entry(0, [5, 4]), _entry(1, [3, 2]), _entry(3, [5, 4])], r"peers \[0, 3\] hold no"),
        ([_entry(0, [5, 4]), _entry(None, None, wanted=2), _entry(3, [5, 4])], "DMHE_PEER_ID=2"),
        ([_entry(0, [5, 4]), _entry(1, [5, 4], k=5), _entry(3, [5, 4])], "different runs"),
    ],
    ids=["below-t", "no-threshold", "no-common-round", "wanted-taken", "other-run"],
)  # fmt: skip
def test_plan_refuses_with_one_line(table, message):
    with pytest.raises(ConfigError, match=message):
        plan_restart(table, 0)


def test_nothing_held_anywhere_is_a_fresh_start():
    assert plan_restart([_entry(None, None, held=()), _entry(None, None, held=())], 0) is None


def _aggregators(tmp_path, **extra) -> list[EncryptedAggregator]:
    return [
        EncryptedAggregator(K, threshold=T, rounds=4, values=64, value_bits=8,
                            key_dir=str(tmp_path / f"rank-{r}"), **extra)
        for r in range(K)
    ]  # fmt: skip


def test_three_of_four_identities_reload_their_keys_and_decrypt_t_of_k(tmp_path):
    first = _aggregators(tmp_path)
    InProcessNetwork(K).run(lambda t: first[t.rank].setup(t))
    for agg in first:  # the processes end: their journals close (a journal is flock'd)
        agg._journal.close()
        agg._threshold.journal.close()
    x = [(np.arange(64, dtype=np.int64) % 50) * (r + 1) // 2 - 60 for r in range(K)]

    net = InProcessNetwork(K)
    net.drop(2, permanent=True)  # identity 2 is not restarted
    net.revive_all()
    again = _aggregators(tmp_path)

    def restarted(t):
        if t.rank == 2:
            t.leave()
        again[t.rank].setup(t)  # over the live peers: the persisted keys, no new set-up
        agg, mine = again[t.rank], x[t.rank]
        return live_round(
            t, peers=K, threshold=T, tag="r1", aggregate=lambda sub: agg.allreduce_sum(sub, mine)
        )

    results = net.run(restarted)
    assert isinstance(results[2], PeerDropped)
    for r in (0, 1, 3):
        assert again[r].setup_id == first[r].setup_id
        live, total = results[r]
        assert live == [0, 1, 3]
        np.testing.assert_array_equal(total, x[0] + x[1] + x[3])


def test_fewer_identities_without_their_keys_are_refused(tmp_path):
    aggs = _aggregators(tmp_path)
    net = InProcessNetwork(K)
    net.drop(2, permanent=True)
    net.revive_all()

    def restarted(t):
        if t.rank == 2:
            t.leave()
        aggs[t.rank].setup(t)

    with pytest.raises(ConfigError, match="3 of 4 peers restarted without their persisted keys"):
        net.run(restarted)
    assert not (tmp_path / "rank-0" / KEYS).exists()  # no fresh key share written
