"""Process peers restarted from a run directory, possibly fewer than before: who is who.

A run of K process peers keeps each original peer's identity in its folder ``rank-N/``: its key
material (``keys.bin``: the additive key share, the Shamir point N + 1 and share), its share
journals, and its last two checkpoints, each recording the original peers live when it was
saved. When the survivors of a loss are relaunched with ``--resume`` (any number W of
processes, K or fewer), each process takes over ONE original identity before anything else:

1. it lists the identities its run directory holds (``rank-N/`` with a verified checkpoint) that
   the newest checkpoint records as live (a peer lost for good is not taken over: its model is
   behind), and claims the first free one with a compare-and-set on the rendezvous store, its
   own launch rank first (so that a restart with all K keeps every rank), or exactly the one
   named by ``DMHE_PEER_ID`` (multi-machine runs, where each machine holds its own folders);
2. it posts what it took (identity, the rounds of its checkpoints, K, t) and reads every
   process's post: the same table on every process, hence the same decision everywhere
   (:func:`plan_restart`): refused (exit 2, one line) when a process took nothing, when fewer
   than t identities (K without threshold keys) are taken, or when no round is held by all; else
   the run resumes from the newest round that every identity holds (its newest or its
   previous checkpoint), as original peer N with its own keys, journals and data shard.

A compare-and-set gives each identity to one process only, so no two processes ever act for one
key share, and a restarted identity always reloads its persisted keys (never a fresh share: see
:func:`dmhe.aggregators.encrypted_keys.restore_keys`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmhe.config import ConfigError
from dmhe.rundir import RunDir

__all__ = ["PEER_ID_VAR", "Held", "Restart", "claim_identity", "held_identities", "plan_restart"]

#: environment variable naming the original peer this process takes over (multi-machine)
PEER_ID_VAR = "DMHE_PEER_ID"
_FOLDER = re.compile(r"rank-(\d+)")


@dataclass(frozen=True)
class Held:
    """An original peer's folder found in this process's run directory."""

    peer: int
    rounds: tuple[int, ...]  # of its verified checkpoints, newest first
    members: tuple[int, ...]  # the original peers live at its newest checkpoint
    peers: int  # K of the run
    threshold: int | None
    error: str | None = None  # why its checkpoint cannot be read (reported by who claims it)


@dataclass(frozen=True)
class Restart:
    """The agreed restart: this process acts as original ``peer`` of ``peers`` from ``round``."""

    peer: int
    peers: int
    threshold: int | None
    round: int
    launch_ranks: dict[int, int] = field(default_factory=dict)  # identity -> launch rank

    @property
    def members(self) -> list[int]:
        """The original peers taken over (the live set of the restarted run)."""
        return sorted(self.launch_ranks)


def held_identities(out_dir: str | os.PathLike[str]) -> dict[int, Held]:
    """The ``rank-N/`` folders of ``out_dir`` that hold a checkpoint, verified (a damaged one is
    held with its ``error``: the process that claims it reports it); creates nothing."""
    found = {}
    root = Path(out_dir)
    for d in sorted(root.glob("rank-*")) if root.is_dir() else []:
        m = _FOLDER.fullmatch(d.name)
        if not m or not d.is_dir():
            continue
        peer = int(m.group(1))
        try:
            ckpts = RunDir(root, rank=peer).checkpoints("cpu")
        except ConfigError as exc:
            found[peer] = Held(peer, (), (), 0, None, error=str(exc))
            continue
        if not ckpts:
            continue
        cfg = ckpts[0]["config"]
        k = int(cfg["peers"])
        members = ckpts[0].get("members", list(range(k)))
        found[peer] = Held(
            peer=peer,
            rounds=tuple(int(c["round"]) for c in ckpts),
            members=tuple(int(x) for x in members),
            peers=k,
            threshold=cfg.get("threshold"),
        )
    return found


def _order(held: Mapping[int, Held], own: int) -> list[int]:
    """The identities to try, in order: live at the newest checkpoint, ``own`` first (also
    when damaged: its process reports it; the others leave a damaged folder alone)."""
    sound = [h for h in held.values() if h.error is None]
    newest = max((h.rounds[0] for h in sound), default=0)
    live = {m for h in sound if h.rounds[0] == newest for m in h.members}
    order = [p for p, h in held.items() if ((p in live) if h.error is None else (p == own))]
    return sorted(order, key=lambda p: (p != own, p))


def claim_identity(
    store: Any,
    rank: int,
    world: int,
    held: Mapping[int, Held],
    *,
    wanted: int | None = None,
    error: str | None = None,
    bound: float = 300.0,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
) -> Restart | None:
    """Claim one identity of ``held`` for launch rank ``rank`` of ``world`` on ``store`` (a
    fresh prefix of the rendezvous store), post it, and decide with every process alike
    (:func:`plan_restart`). ``wanted``: the one identity to claim (``DMHE_PEER_ID``);
    ``error``: why this process could not look (posted, so that every process stops with it)."""
    mine = None
    for peer in [] if error else [wanted] if wanted is not None else _order(held, rank):
        if peer not in held:
            break
        won = store.compare_set(f"claim/{peer}", "", str(rank))
        if (won.decode() if isinstance(won, bytes) else str(won)) == str(rank):
            mine = held[peer]
            break
    if mine is not None and mine.error is not None:
        error = mine.error
    entry = {"peer": None, "held": sorted(held), "wanted": wanted, "error": error}
    if mine is not None and error is None:
        entry.update(peer=mine.peer, rounds=list(mine.rounds), peers=mine.peers)
        entry.update(threshold=mine.threshold)
    store.set(f"rank/{rank}", json.dumps(entry))
    keys = [f"rank/{j}" for j in range(world)]
    start, pause = clock(), 0.001
    while not store.check(keys):
        if clock() - start > bound:
            missing = [j for j, k in enumerate(keys) if not store.check([k])]
            raise ConfigError(f"restart: ranks {missing} did not claim an identity in {bound} s")
        sleep(pause)
        pause = min(2 * pause, 0.05)
    table = []
    for k in keys:
        raw = store.get(k)
        table.append(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
    return plan_restart(table, rank)


def plan_restart(table: Sequence[Mapping[str, Any]], rank: int) -> Restart | None:
    """The restart every process decides from the same ``table`` (one post per launch rank):
    None when no process holds any identity (nothing to restart: a fresh start), else the
    :class:`Restart` of launch rank ``rank``; :class:`ConfigError` (exit 2) when it cannot
    go on."""
    failed = [j for j, e in enumerate(table) if e.get("error")]
    if failed:
        raise ConfigError(f"restart: rank {failed[0]}: {table[failed[0]]['error']}")
    if all(not e["held"] for e in table):
        return None
    empty = [j for j, e in enumerate(table) if e["peer"] is None]
    if empty:
        e = table[empty[0]]
        why = (
            f"{PEER_ID_VAR}={e['wanted']} is not held there or is taken"
            if e["wanted"] is not None
            else f"it holds {e['held'] or 'none'}, taken or lost for good"
        )
        raise ConfigError(f"restart: rank {empty[0]} found no original peer to act for ({why})")
    shapes = {(e["peers"], e["threshold"]) for e in table}
    if len(shapes) != 1:
        raise ConfigError(f"restart: the identities come from different runs (K, t): {shapes}")
    ((k, t),) = shapes
    taken = sorted(e["peer"] for e in table)
    need = t if t is not None and t < k else k
    if len(taken) < need:
        why = f"threshold {t}" if t is not None and t < k else "without --threshold all are needed"
        raise ConfigError(
            f"restart: {len(taken)} of {k} original peers ({taken}) restarted, {need} needed "
            f"({why}): the run cannot go on"
        )
    common = min(e["rounds"][0] for e in table)
    behind = [e["peer"] for e in table if common not in e["rounds"]]
    if behind:
        raise ConfigError(f"restart: peers {behind} hold no checkpoint of round {common}")
    return Restart(
        peer=int(table[rank]["peer"]),
        peers=int(k),
        threshold=t,
        round=common,
        launch_ranks={int(e["peer"]): j for j, e in enumerate(table)},
    )
