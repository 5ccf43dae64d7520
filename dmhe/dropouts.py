"""Lost peers: the dropout simulation's schedule and the rule for which rounds may go on.

``drop_prob`` is the probability that a peer is lost in a round (one attempt of it); the
decisions are drawn per (round, attempt, peer) from the run seed, so a run is reproducible and
its losses do not depend on how many messages a protocol sends. ``setup_drop_prob`` does the
same per set-up attempt. A lost peer leaves at the start of the attempt, before it sends
anything. The draws are simulation events, not secrets (``random.Random`` is fine here).

With t-of-K threshold keys a round needs ``t`` live peers and finishes with them (the
contributors); without, it needs all K and an attempt that loses one is redone (a retry).
Across processes a peer lost for good (a killed process) is never needed again: with fewer than
``needed`` survivors the run stops with :class:`PeersLost`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from dmhe.collectives import all_gather_bytes
from dmhe.transport import InProcessNetwork, PeerDropped, SubRing, Transport

__all__ = [
    "PeersLost",
    "after_loss",
    "agree_digest",
    "check_survivors",
    "live_ring",
    "live_round",
    "lost_in_attempt",
    "merge_results",
    "needed_peers",
    "progress_postfix",
    "retrying",
    "threshold_below",
]

_ROUND, _SETUP = 9, 10  # stream purposes (see dmhe.trainer._stream_seed for the others)


class PeersLost(RuntimeError):
    """Too few peers are left for the run to go on (below the threshold, or any loss without
    threshold keys); the message names the lost ranks."""


def _uniform(*parts: int) -> float:
    data = b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)
    seed = int.from_bytes(hashlib.sha256(b"dmhe-dropouts" + data).digest()[:8], "little")
    return random.Random(seed).random()


def lost_in_attempt(
    seed: int, round_index: int, attempt: int, *, peers: int, prob: float, setup: bool = False
) -> frozenset[int]:
    """The peers lost in one attempt of round ``round_index`` (``setup``: of the set-up), each
    independently with probability ``prob``."""
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {prob}")
    if prob == 0.0:
        return frozenset()
    purpose = _SETUP if setup else _ROUND
    return frozenset(
        p for p in range(peers) if _uniform(seed, purpose, round_index, attempt, p) < prob
    )


def needed_peers(peers: int, threshold: int | None) -> int:
    """How many live peers a round needs: t with threshold keys, else all K."""
    return peers if threshold is None else threshold


def threshold_below(threshold: int | None, peers: int) -> int | None:
    """t when rounds may finish without every peer (t < K), else None."""
    return threshold if threshold is not None and threshold < peers else None


def check_survivors(members: list[int], peers: int, threshold: int | None) -> None:
    """Raise :class:`PeersLost` if ``members`` (the agreed live set) cannot finish a round."""
    need = needed_peers(peers, threshold)
    if len(members) >= need:
        return
    lost = sorted(set(range(peers)) - set(members))
    names = ", ".join(map(str, lost))
    if threshold is None:
        why = "without --threshold every peer is needed"
    else:
        why = f"{len(members)} left, threshold {threshold}"
    raise PeersLost(f"peer(s) {names} lost for good: {why}; the run cannot go on")


def retrying(
    collective: Callable[[Callable[[Transport], Any]], list[Any]],
    fn: Callable[[Transport], Any],
    what: str,
    *,
    everyone: bool,
    lost: Callable[[int], frozenset[int]] | None,
    max_retries: int,
    recover: Callable[[PeerDropped, bool], None],
) -> tuple[list[Any], int]:
    """``(collective(fn) results, retries)``: ``fn`` run again (up to ``max_retries`` times)
    after an attempt that lost a needed peer; ``everyone``: a local peer that dropped out also
    fails the attempt. ``lost(attempt)``: the peers that leave at the start of that attempt.
    ``recover(failure, everyone)`` runs between attempts (it may raise to stop)."""
    retries = 0
    while True:
        gone = lost(retries) if lost is not None else frozenset()
        try:
            results = collective(_losing(fn, gone) if gone else fn)
            dropped = [r for r in results if isinstance(r, PeerDropped)]
            if not (everyone and dropped):
                return results, retries
            failure: PeerDropped = dropped[0]
        except PeerDropped as exc:
            failure = exc
        retries += 1
        recover(failure, everyone)
        if retries > max_retries:
            raise RuntimeError(f"{what} failed {retries} times ({failure})") from failure


def _losing(fn: Callable[[Transport], Any], gone: frozenset[int]) -> Callable[[Transport], Any]:
    """``fn``, except that the peers in ``gone`` leave before doing anything."""

    def body(t: Transport) -> Any:
        if t.rank in gone:
            t.leave()
        return fn(t)

    return body


def live_ring(t: Transport) -> Transport:
    """``t``, or a sub-ring over its live peers (a restart with fewer peers than the run's)."""
    live = t.reachable_peers()
    return t if len(live) == t.world_size else SubRing(t, live)


def live_round(
    t: Transport,
    *,
    peers: int,
    threshold: int | None,
    aggregate: Callable[[Transport], np.ndarray],
    tag: str,
    check: Callable[[Transport, np.ndarray], None] | None = None,
) -> tuple[list[int], np.ndarray]:
    """One attempt of a round on peer ``t.rank``: ``(contributors, sum)``.

    The live set is agreed before anyone encrypts (with threshold keys by a liveness exchange
    among the reachable peers, else every peer is needed); ``aggregate`` runs over it (a
    :class:`~dmhe.transport.SubRing` when peers are missing); ``check`` may compare results;
    the attempt's result is kept only once every member holds it (``t.commit``).
    """
    members = t.reachable_peers()
    if t.rank not in members:
        t.leave()  # lost for good (InProcessNetwork.drop(..., permanent=True))
    live = t.live_peers(among=members) if threshold is not None else members
    need = needed_peers(peers, threshold)
    if len(live) < need:
        missing = sorted(set(range(peers)) - set(live))
        raise PeerDropped(missing[0], f"{tag}: {len(live)} live peers, {need} needed")
    sub = t if len(live) == t.world_size else SubRing(t, live)
    out = aggregate(sub)
    if check is not None:
        check(sub, out)
    t.commit(tag)
    return live, out


def agree_digest(t: Transport, total: np.ndarray, *, before: str) -> None:
    """Every live peer started the round from the same model (digest ``before``) and holds
    the same sum: digests all-gathered and compared."""
    mine = hashlib.sha256(before.encode() + np.ascontiguousarray(total).tobytes()).digest()
    if len(set(all_gather_bytes(t, mine))) != 1:
        raise AssertionError("peers disagree on the model or on the round's sum")


def merge_results(
    results: list[Any], round_index: int
) -> tuple[np.ndarray, list[int], dict[str, float]]:
    """``(sum, contributors, mean phase timings)`` from the local peers' results of a
    successful attempt (``(contributors, sum, timings)`` each; peers lost in it excluded)."""
    live = [r for r in results if not isinstance(r, PeerDropped)]
    if not live:
        raise RuntimeError(f"round {round_index}: every local peer dropped out")
    contributors, first, _ = live[0]
    for r in live:
        if not np.array_equal(r[1], first):
            raise AssertionError(f"round {round_index}: peers obtained different aggregates")
    timings = {
        key: float(np.mean([r[2].get(key, 0.0) for r in live]))
        for key in ("encrypt", "communicate", "decrypt")
    }
    return first, list(contributors), timings


def progress_postfix(metrics: dict[str, Any], peers: int) -> dict[str, str]:
    """The progress line's fields: accuracy, traffic, contributors of K, retries."""
    return {
        "acc": f"{metrics['accuracy']:.3f}",
        "kB": f"{metrics['bytes_sent_per_peer'] / 1e3:.0f}",
        "peers": f"{len(metrics['contributors'])}/{peers}",
        "retries": str(metrics["retries"]),
    }


def after_loss(
    network: InProcessNetwork | None,
    transport: Transport,
    peers: int,
    threshold: int | None,
    failure: PeerDropped,
    everyone: bool,
) -> None:
    """Between attempts: in-process the simulated losses are forgotten (``revive_all``);
    across processes the survivors agree on the live set, or stop with :class:`PeersLost`
    (always for a set-up, ``everyone``: new keys need every peer)."""
    if network is not None:
        network.revive_all()
        return
    if everyone:
        raise PeersLost(f"set-up lost a peer, new keys need all {peers}: {failure}")
    live = transport.recover(failure)
    check_survivors(live, peers, threshold_below(threshold, peers))
