"""Liveness across processes: the bound of a wait, what counts as evidence that a peer is gone, and
the survivors' agreement on the live set (used by :mod:`dmhe.torch_transport`; no torch here)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["WaitPolicy", "agree_live_set", "is_disconnect"]

_POLL_MAX = 0.02  # seconds between checks of a pending operation (it starts at 0.2 ms)
#: words of a gloo error that say the peer's end of the connection went away (direct evidence)
_DISCONNECT = ("connection closed", "connection reset", "broken pipe", "connection refused")


@dataclass(frozen=True)
class WaitPolicy:
    """How long a peer waits for another before naming it lost.

    ``fixed``: the round bound in seconds (``--peer-timeout``); None derives it as
    ``max(floor, factor x slowest round)``. ``setup``: the bound of the set-up and of the first
    round (key generation and first-call compilation are not measured yet).
    """

    fixed: float | None = None
    floor: float = 60.0
    factor: float = 4.0
    setup: float = 300.0

    def __post_init__(self) -> None:
        for name in ("floor", "factor", "setup"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WaitPolicy.{name} must be positive")
        if self.fixed is not None and not self.fixed > 0:
            raise ValueError(f"peer timeout must be positive, got {self.fixed}")

    def bound(self, slowest_round: float | None) -> float:
        """Seconds to wait, given the slowest round so far (None: none finished yet)."""
        if slowest_round is None:
            return self.setup
        if self.fixed is not None:
            return self.fixed
        return max(self.floor, self.factor * slowest_round)


def _short(exc: BaseException) -> str:
    """gloo's message without its source path (``[/.../pair.cc:561] Connection closed``)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return text[:120]


def is_disconnect(exc: BaseException) -> bool:
    """Whether a gloo error says the peer closed or reset the connection (its process died or
    left): direct evidence of a loss, unlike a timeout."""
    text = str(exc).lower()
    return any(word in text for word in _DISCONNECT)


def agree_live_set(
    store: Any,
    base: str,
    members: list[int],
    me: int,
    bound: float,
    *,
    dead: str,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
) -> list[int]:
    """The live set that every survivor of ``members`` adopts (``me`` among them, or not).

    ``me`` registers as ``base/<me>``, then waits until every member is registered or known dead
    (a key ``dead/<m>``, posted by a peer that saw ``m``'s connection close), or ``bound`` seconds
    have passed; then proposes the members registered by then with ``compare_set(base/live)``;
    the first proposal wins and every caller returns it.

    Why this is right: (1) one set: the first compare-and-set fixes ``base/live`` and every
    caller returns that value. (2) No live survivor left out: let S be the survivor whose
    proposal won, deciding at time d. S stops early only when every member is registered or has
    a ``dead`` key; a live peer has none (its connections are open), so it is registered before
    d, hence in the set; otherwise d >= (S's entry) + ``bound``, and a live peer that entered
    within the bound of S registered before d. Neither a timeout nor a report of a loss shortens
    the wait: a peer waiting on a silent one looks silent itself to whoever waits on it (a blame
    chain), so such evidence could name a live peer. (3) A dead peer is left out: it never
    registers (one that registered and then died makes the new group's creation fail within the
    bound, and the run stops). A live peer that registers after d finds itself outside the set
    and must stop. Not covered: a live peer whose connection closed anyway (a dead key) and that
    registers after the others, or one later than the bound: it is left out, and stops.
    """
    store.set(f"{base}/{me}", "1")
    start, pause = clock(), 0.001
    while True:
        here = [m for m in members if store.check([f"{base}/{m}"])]
        gone = [m for m in members if m not in here and store.check([f"{dead}/{m}"])]
        if len(here) + len(gone) == len(members) or clock() - start > bound:
            break
        sleep(pause)
        pause = min(2 * pause, _POLL_MAX)
    won = store.compare_set(f"{base}/live", "", json.dumps(here))
    return [int(m) for m in json.loads(won.decode() if isinstance(won, bytes) else won)]
