"""The share journal: never two shares for the same CRP or ciphertext from one key share.

Publishing two different shares computed from the same secret share for the same public input
(with fresh noise each time) lets an observer average the noise away and recover the share
(eprint 2024/194, 2025/409). The journal keeps, per key share, every share produced, keyed by
(protocol step, CRP seed or ciphertext digest): a retry of the identical request returns the
recorded share (the same bytes), a request that differs in anything else raises `ShareReplay`.
Keep one journal per secret-key share, and persist it if the peer can restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpubfv.mhe.shares import ShareReplay


class ShareJournal:
    def __init__(self, owner: int | str = "") -> None:
        self.owner = owner
        self._log: dict[tuple[str, bytes], tuple[bytes, Any]] = {}

    def __len__(self) -> int:
        return len(self._log)

    def __contains__(self, key: tuple[str, bytes]) -> bool:
        return key in self._log

    def record(self, step: str, digest: bytes, request: bytes, make: Callable[[], Any]) -> Any:
        key = (step, bytes(digest))
        if key in self._log:
            recorded_request, value = self._log[key]
            if recorded_request != request:
                raise ShareReplay(
                    f"peer {self.owner!r} already produced a {step} share for "
                    f"{digest.hex()[:16]}… with other settings; a second share would leak the "
                    "key share"
                )
            if value is _RELEASED:
                raise ShareReplay(
                    f"peer {self.owner!r} produced its {step} share for {digest.hex()[:16]}… "
                    "in a finished round and released it; it cannot be re-sent or re-made"
                )
            return value
        value = make()
        self._log[key] = (bytes(request), value)
        return value

    def release(self) -> int:
        """Drop the recorded shares (keep what they were for): call once a round is finished.

        A long training run would otherwise keep every share it ever sent. Released entries
        still refuse any new share for the same CRP/ciphertext; only the retry-by-resending
        service ends. Returns how many shares were released.
        """
        count = 0
        for key, (request, value) in self._log.items():
            if value is not _RELEASED:
                self._log[key] = (request, _RELEASED)
                count += 1
        return count


_RELEASED = object()
