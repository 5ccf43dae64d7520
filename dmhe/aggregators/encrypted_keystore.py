"""A peer's persisted key material, so that a restarted survivor resumes without a new set-up.

One file per process peer, ``rank-N/keys.bin`` (the folder 0700, the file 0600, written
atomically: temporary file, fsync, rename, fsync of the folder)::

    magic     8 bytes  b"DMHEKEY1"
    header    u32 length + UTF-8 JSON (sorted keys): rank, setup id, parameter fingerprint,
              public-key fingerprint, threshold t and the Shamir points (or null)
    frames    u32 length + gpubfv frame, for: the additive secret share (SecretKey), the
              collective public key (PublicKey), the Shamir share (ThresholdSecretShare; only
              with a threshold)
    digest    32 bytes BLAKE2b(everything above, person=b"dmhe-keystore-1")

The digest catches a truncated, torn or edited file (it is no MAC: whoever can write the file
can also recompute it; the 0600 mode is what keeps others out). :func:`load_keys` refuses a
file that is not owner-only, truncated, corrupt, of another peer, of other parameters or whose
public key does not match its recorded fingerprint, with a :class:`~dmhe.config.ConfigError`
(exit 2) and changes nothing. The share journals of these key shares live beside the file
under names fixed by the set-up id (:func:`journal_path`), so a restart reopens the SAME
journal and every row it recorded is refused (or replayed): never a second share for one c1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

from dmhe.config import ConfigError
from gpubfv.keys import PublicKey, SecretKey
from gpubfv.mhe import ThresholdSecretShare
from gpubfv.serialization import SerializationError, from_bytes, to_bytes

__all__ = [
    "KEYS",
    "KeyMaterial",
    "journal_path",
    "load_keys",
    "public_key_fingerprint",
    "save_keys",
]

KEYS = "keys.bin"
MAGIC = b"DMHEKEY1"
_DIGEST = 32
_PERSON = b"dmhe-keystore-1"


class KeysForOtherParameters(ConfigError):
    """The key file is sound but was made for another parameter set (another budget D)."""


def _digest(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=_DIGEST, person=_PERSON).digest()


def public_key_fingerprint(pk: PublicKey) -> str:
    """Hex BLAKE2b-128 of the collective public key's canonical frame (the same on every peer)."""
    return hashlib.blake2b(to_bytes(pk), digest_size=16, person=b"dmhe-cpk-1").hexdigest()


@dataclasses.dataclass(frozen=True)
class KeyMaterial:
    """What one peer needs to rejoin its run: its key shares, the collective key and ids."""

    rank: int
    setup_id: str  # hex; the same on every peer of one set-up
    secret_key: SecretKey
    public_key: PublicKey
    threshold_share: ThresholdSecretShare | None = None
    threshold: int | None = None
    points: tuple[int, ...] | None = None

    @property
    def public_key_fingerprint(self) -> str:
        """See :func:`public_key_fingerprint`."""
        return public_key_fingerprint(self.public_key)

    def header(self) -> dict[str, Any]:
        """The JSON header of the key file (no secret in it)."""
        return {
            "rank": self.rank,
            "setup_id": self.setup_id,
            "params": self.secret_key.params.fingerprint.hex(),
            "public_key": self.public_key_fingerprint,
            "threshold": self.threshold,
            "points": None if self.points is None else list(self.points),
        }


def journal_path(folder: str | os.PathLike[str], key: str, setup_id: str) -> Path:
    """The one journal file of key share ``key`` ("additive", "threshold") of this set-up (its
    folder is made, owner-only, if missing)."""
    if key not in ("additive", "threshold"):
        raise ValueError(f"unknown key share {key!r}")
    if not setup_id or any(c not in "0123456789abcdef" for c in setup_id):
        raise ValueError(f"set-up id must be lower-case hex, not {setup_id!r}")
    _private_folder(Path(folder))
    return Path(folder) / f"{key}-{setup_id[:32]}.journal"


def _private_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"key folder {folder} is not a folder")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def encode_keys(keys: KeyMaterial) -> bytes:
    """The key file's bytes (see the module docstring)."""
    if (keys.threshold_share is None) != (keys.threshold is None):
        raise ValueError("a threshold share and its threshold go together")
    head = json.dumps(keys.header(), sort_keys=True, separators=(",", ":")).encode()
    frames = [keys.secret_key, keys.public_key]
    if keys.threshold_share is not None:
        frames.append(keys.threshold_share)
    blob = MAGIC + struct.pack("<I", len(head)) + head
    for obj in frames:
        raw = to_bytes(obj)
        blob += struct.pack("<I", len(raw)) + raw
    return blob + _digest(blob)


def save_keys(folder: str | os.PathLike[str], keys: KeyMaterial) -> Path:
    """Write ``keys`` to ``folder/keys.bin`` atomically, owner-only; returns the path."""
    where = Path(folder)
    _private_folder(where)
    path = where / KEYS
    data = encode_keys(keys)
    tmp = where / f".{KEYS}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(where, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def _take(raw: bytes, at: int, path: Path) -> tuple[bytes, int]:
    if at + 4 > len(raw):
        raise ConfigError(f"key file {path} is truncated at byte {at}")
    (n,) = struct.unpack_from("<I", raw, at)
    if at + 4 + n > len(raw):
        raise ConfigError(f"key file {path} is truncated: a {n}-byte field at byte {at}")
    return raw[at + 4 : at + 4 + n], at + 4 + n


def load_keys(folder: str | os.PathLike[str], ctx: Any, rank: int) -> KeyMaterial:
    """Read and verify ``folder/keys.bin`` of peer ``rank`` for the parameters of ``ctx``.

    :class:`ConfigError` (exit 2) when missing, not owner-only, truncated, corrupt, tampered,
    of another peer or of other parameters.
    """
    path = Path(folder) / KEYS
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"no key file {path}: this peer has no persisted keys") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 or st.st_uid != os.getuid():
        raise ConfigError(f"key file {path} has mode {mode:04o}: it must be 0600 and yours")
    raw = path.read_bytes()
    if len(raw) < len(MAGIC) + 4 + _DIGEST or raw[: len(MAGIC)] != MAGIC:
        raise ConfigError(f"key file {path} is not a dmhe key file (or truncated)")
    body, tail = raw[:-_DIGEST], raw[-_DIGEST:]
    if _digest(body) != tail:
        raise ConfigError(f"key file {path} fails its digest: truncated, corrupt or edited")
    head_raw, at = _take(body, len(MAGIC), path)
    try:
        head = json.loads(head_raw)
    except ValueError:
        raise ConfigError(f"key file {path} has an unreadable header") from None
    if head.get("rank") != rank:
        raise ConfigError(f"key file {path} belongs to peer {head.get('rank')}, not {rank}")
    if head.get("params") != ctx.params.fingerprint.hex():
        raise KeysForOtherParameters(
            f"key file {path} was made for other parameters (the encrypted mode picks them from "
            "the decryption budget D = rounds x (1 + max retries): resume with the same D)"
        )
    frames = []
    while at < len(body):
        frame, at = _take(body, at, path)
        frames.append(frame)
    with_t = head.get("threshold") is not None
    if len(frames) != (3 if with_t else 2):
        raise ConfigError(f"key file {path} holds {len(frames)} keys, expected {2 + with_t}")
    try:
        sk = from_bytes(ctx, frames[0], SecretKey)
        pk = from_bytes(ctx, frames[1], PublicKey)
        tsk = from_bytes(ctx, frames[2], ThresholdSecretShare) if with_t else None
    except SerializationError as exc:
        raise ConfigError(f"key file {path}: {exc}") from None
    keys = KeyMaterial(
        rank=rank,
        setup_id=str(head.get("setup_id")),
        secret_key=sk,
        public_key=pk,
        threshold_share=tsk,
        threshold=head.get("threshold"),
        points=None if head.get("points") is None else tuple(head["points"]),
    )
    if keys.header() != head:
        raise ConfigError(f"key file {path}: its header does not match the keys it holds")
    return keys
