"""The share journal: one key share never makes two shares for the same c1 row or CRP digit.

Two different shares from the same secret share for the same public input (fresh noise each
time) let an observer average the noise away and recover the share (eprint 2024/194, 2025/409).
The journal keys what a key share has produced:

- key switching (CKS to 0, CKS to another key, PCKS: ONE namespace) per ciphertext ROW, by the
  digest of that row's c1 (with parameter fingerprint and level). A request whose rows were all
  seen with the same request tag gets the recorded rows back, re-assembled in the requested
  order (bit-identical) while they are held; any row seen under another tag (another protocol,
  target key, receiver, smudging, active set) or already released raises `ShareReplay`.
- CRP protocols (CKG, GKG, RKG) per CRP seed digest and gadget digit.

File format (`ShareJournal.open`, append-only, mode 0600, one fsync per share request)::

    header   8 bytes  b"GBFVJRN1"
    record   u32 body length, body, 16-byte BLAKE2b(length + body)
    body     u8 kind (1 binding, 2 CRP request, 3 key-switch request), u8 family length,
             family (ASCII), 32-byte request tag, u32 count, count * 32-byte keys

Only what is needed to refuse is persisted; share payloads stay in memory until `release()`.
After a restart every recorded row or digit is refused (it can no longer be re-sent): safe.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpubfv.mhe.shares import ShareReplay

MAGIC = b"GBFVJRN1"
_CHECK = 16
_BINDING, _CRP, _KS = 1, 2, 3
KEY_SWITCH = "key-switch"


class JournalCorrupt(RuntimeError):
    """A journal file is truncated or fails its checksums: it is refused, never repaired."""


class DecryptionBudgetExceeded(RuntimeError):
    """A key-switch request would exceed the declared decryption budget D of this key share."""


class _Entry:
    __slots__ = ("family", "tag", "payload")

    def __init__(self, family: str, tag: bytes, payload: Any) -> None:
        self.family, self.tag, self.payload = family, tag, payload


_GONE = object()  # recorded, payload released or lost in a restart


def _checksum(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=_CHECK).digest()


def _record(kind: int, family: str, tag: bytes, keys: list[bytes]) -> bytes:
    fam = family.encode("ascii")
    body = struct.pack("<BB", kind, len(fam)) + fam + tag + struct.pack("<I", len(keys))
    body += b"".join(keys)
    blob = struct.pack("<I", len(body)) + body
    return blob + _checksum(blob)


class ShareJournal:
    """Per key share: what it has produced (persistent, refusing) and the held payloads.

    Build it with `ShareJournal.open(path)` (persistent) or, for tests only,
    `ShareJournal.in_memory(unsafe_not_persistent=True)`; the constructor is private.
    """

    def __init__(self, *, _fd: int | None, _path: Path | None, _token: object) -> None:
        if _token is not _PRIVATE:
            raise TypeError(
                "use ShareJournal.open(path) (or ShareJournal.in_memory(unsafe_not_persistent="
                "True) in tests)"
            )
        self.path, self._fd = _path, _fd
        self._log: dict[bytes, _Entry] = {}
        self.binding: bytes | None = None
        self.key_switch_rows = 0

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ShareJournal:
        """Open (or create, mode 0600) the journal file at `path`; exclusive to this process.

        A truncated or corrupt file raises `JournalCorrupt` naming the file and the offset.
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(p, os.O_RDWR | os.O_APPEND)
            created = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"share journal {p} is in use by another process") from None
        os.fchmod(fd, 0o600)
        j = cls(_fd=fd, _path=p, _token=_PRIVATE)
        try:
            if created:
                os.write(fd, MAGIC)
                os.fsync(fd)
                dfd = os.open(p.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            else:
                j._replay(p.read_bytes())
        except BaseException:
            j.close()
            raise
        return j

    @classmethod
    def in_memory(cls, *, unsafe_not_persistent: bool = False) -> ShareJournal:
        """A journal that forgets everything when the process ends: tests and throwaway runs."""
        if unsafe_not_persistent is not True:
            raise ValueError(
                "an in-memory journal does not survive a restart (a restarted peer could make "
                "second shares); pass unsafe_not_persistent=True to accept that, or use "
                "ShareJournal.open(path)"
            )
        return cls(_fd=None, _path=None, _token=_PRIVATE)

    def _replay(self, raw: bytes) -> None:
        where = self.path
        if raw[: len(MAGIC)] != MAGIC:
            raise JournalCorrupt(f"{where}: offset 0: not a share journal (bad or short header)")
        pos = len(MAGIC)
        while pos < len(raw):
            if len(raw) - pos < 4:
                raise JournalCorrupt(f"{where}: offset {pos}: truncated record length")
            (length,) = struct.unpack_from("<I", raw, pos)
            end = pos + 4 + length
            if end + _CHECK > len(raw):
                raise JournalCorrupt(f"{where}: offset {pos}: truncated record")
            if _checksum(raw[pos:end]) != raw[end : end + _CHECK]:
                raise JournalCorrupt(f"{where}: offset {pos}: record checksum mismatch")
            try:
                self._apply(raw[pos + 4 : end])
            except (struct.error, ValueError, UnicodeDecodeError) as exc:
                raise JournalCorrupt(f"{where}: offset {pos}: malformed record ({exc})") from None
            pos = end + _CHECK

    def _apply(self, body: bytes) -> None:
        kind, flen = struct.unpack_from("<BB", body, 0)
        family = body[2 : 2 + flen].decode("ascii")
        off = 2 + flen
        tag = body[off : off + 32]
        (count,) = struct.unpack_from("<I", body, off + 32)
        keys = body[off + 36 :]
        if len(tag) != 32 or len(keys) != 32 * count or kind not in (_BINDING, _CRP, _KS):
            raise ValueError("record fields do not add up")
        if kind == _BINDING:
            self.binding = tag
            return
        for i in range(count):
            self._log[keys[32 * i : 32 * i + 32]] = _Entry(family, tag, _GONE)
        if kind == _KS:
            self.key_switch_rows += count

    def _persist(self, kind: int, family: str, tag: bytes, keys: list[bytes]) -> None:
        if self._fd is None:
            return
        blob = _record(kind, family, tag, keys)
        if os.write(self._fd, blob) != len(blob):
            raise OSError(f"short write to share journal {self.path}")
        os.fsync(self._fd)

    def close(self) -> None:
        """Release the file (payloads are dropped; the file keeps refusing on reopen)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- binding to one key share ------------------------------------------------------------
    def bind(self, key_digest: bytes) -> None:
        """Tie the journal to one key share (a digest of it); another key share is refused."""
        if self.binding is None:
            self._persist(_BINDING, "binding", key_digest, [])
            self.binding = key_digest
        elif self.binding != key_digest:
            raise ValueError(f"share journal {self.path or '(in memory)'} belongs to another key")

    # -- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._log)

    def __contains__(self, key: bytes) -> bool:
        return key in self._log

    def _refuse(self, key: bytes, family: str, tag: bytes) -> _Entry | None:
        entry = self._log.get(key)
        if entry is None:
            return None
        if entry.family != family or entry.tag != tag:
            raise ShareReplay(
                f"this key share already produced a {entry.family} share for {key.hex()[:16]}… "
                f"under other settings; a second share ({family}) would leak the key share"
            )
        if entry.payload is _GONE:
            raise ShareReplay(
                f"this key share produced its {family} share for {key.hex()[:16]}… in a "
                "finished round (released or before a restart); it cannot be re-sent or re-made"
            )
        return entry

    # -- CRP protocols: one request covers every digit ---------------------------------------
    def crp_share(self, family: str, keys: list[bytes], tag: bytes, make: Callable[[], Any]) -> Any:
        """The share for these CRP digits: recorded if already made, else `make()` recorded."""
        seen = [self._refuse(k, family, tag) for k in keys]
        if any(e is not None for e in seen):
            payloads = {id(e.payload) for e in seen if e is not None}
            if None in seen or len(payloads) != 1:
                raise ShareReplay(f"{family} request covers digits of another request")
            return seen[0].payload  # type: ignore[union-attr]
        value = make()
        self._persist(_CRP, family, tag, keys)
        for k in keys:
            self._log[k] = _Entry(family, tag, value)
        return value

    # -- key switching: per c1 row, one namespace ---------------------------------------------
    def key_switch(
        self,
        keys: list[bytes],
        tag: bytes,
        budget: int,
        make_rows: Callable[[list[int]], list[Any]],
    ) -> list[Any]:
        """One share row per key, in the given order; new rows come from `make_rows(indices)`.

        Rows seen before (same tag, still held) are returned as recorded; new rows count
        against `budget` (the declared number of decryptions of this key share).
        """
        fresh: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if self._refuse(k, KEY_SWITCH, tag) is None and k not in fresh:
                fresh[k] = i
        if self.key_switch_rows + len(fresh) > budget:
            raise DecryptionBudgetExceeded(
                f"{len(fresh)} new key-switch rows after {self.key_switch_rows} would exceed the "
                f"declared decryption budget of {budget}"
            )
        if fresh:
            rows = make_rows(list(fresh.values()))
            self._persist(_KS, KEY_SWITCH, tag, list(fresh))
            for k, row in zip(fresh, rows):
                self._log[k] = _Entry(KEY_SWITCH, tag, row)
            self.key_switch_rows += len(fresh)
        return [self._log[k].payload for k in keys]

    def release(self) -> int:
        """Drop the held payloads (keep what they were for): call once a round is finished.

        Released entries still refuse any new share; only the retry-by-resending service
        ends. Returns how many entries were released.
        """
        count = 0
        for entry in self._log.values():
            if entry.payload is not _GONE:
                entry.payload = _GONE
                count += 1
        return count


_PRIVATE = object()
