"""Framing: a list of byte blobs as one message, and back, in two layouts.

``frame``/``unframe`` (length-prefixed): for each blob, its length as 8 little-endian bytes,
then the blob; an empty list is the empty message. Every place in dmhe that sends several
variable-size blobs of its own in one message uses these two.

``pack_blobs``/``unpack_blobs`` (lengths up front): a uint32 count, the uint32 lengths, then
the blobs back to back. The batched collectives use this layout, because a run of numpy chunks
is then one header and one contiguous body (:class:`dmhe.collectives.ChunkBuffer` writes and
checks it without a Python call per chunk).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["LENGTH_BYTES", "frame", "pack_blobs", "unframe", "unpack_blobs"]

#: bytes of the length prefix before each blob
LENGTH_BYTES = 8


def frame(blobs: Sequence[bytes]) -> bytes:
    """One message holding ``blobs`` in order, each behind its 8-byte little-endian length."""
    parts: list[bytes] = []
    for b in blobs:
        parts.append(len(b).to_bytes(LENGTH_BYTES, "little"))
        parts.append(b)
    return b"".join(parts)  # one copy of every blob, not one per concatenation


def unframe(message: bytes, count: int | None = None) -> list[bytes]:
    """The blobs of a :func:`frame` message; ``count``, when given, must match their number.

    Raises ``ValueError`` on a truncated message or a count mismatch (a corrupt or foreign
    message must not be silently cut short).
    """
    out: list[bytes] = []
    view = memoryview(message)
    off, end = 0, len(view)
    while off < end:
        if off + LENGTH_BYTES > end:
            raise ValueError("truncated frame: length prefix cut short")
        n = int.from_bytes(view[off : off + LENGTH_BYTES], "little")
        off += LENGTH_BYTES
        if off + n > end:
            raise ValueError(f"truncated frame: blob of {n} bytes, {end - off} left")
        out.append(view[off : off + n].tobytes())  # the only copy of the blob
        off += n
    if count is not None and len(out) != count:
        raise ValueError(f"frame holds {len(out)} blobs, expected {count}")
    return out


def pack_blobs(blobs: Sequence[bytes]) -> bytes:
    """One message from several: a uint32 count, the uint32 lengths, then the bytes."""
    head = struct.pack(f"<{len(blobs) + 1}I", len(blobs), *(len(b) for b in blobs))
    return b"".join([head, *blobs])


def unpack_blobs(buf: bytes) -> list[bytes]:
    """The inverse of :func:`pack_blobs`; a malformed message raises ``ValueError``."""
    if len(buf) < 4:
        raise ValueError("batched message shorter than its header")
    (n,) = struct.unpack_from("<I", buf)
    if len(buf) < 4 * (n + 1):
        raise ValueError(f"batched message too short for {n} lengths")
    lengths = struct.unpack_from(f"<{n}I", buf, 4)
    view = memoryview(buf)
    pos, out = 4 * (n + 1), []
    for ln in lengths:
        out.append(view[pos : pos + ln].tobytes())
        pos += ln
    if pos != len(buf):
        raise ValueError(f"batched message holds {len(buf)} bytes, its lengths say {pos}")
    return out
