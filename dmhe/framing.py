"""Length-prefixed framing: a list of byte blobs as one message, and back.

Wire format: for each blob, its length as 8 little-endian bytes, then the blob. The message is
the concatenation; an empty list is the empty message. Every place in dmhe that needs to send
several variable-size blobs in one message uses these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LENGTH_BYTES", "frame", "unframe"]

#: bytes of the length prefix before each blob
LENGTH_BYTES = 8


def frame(blobs: Sequence[bytes]) -> bytes:
    """One message holding ``blobs`` in order, each behind its 8-byte little-endian length."""
    return b"".join(len(b).to_bytes(LENGTH_BYTES, "little") + bytes(b) for b in blobs)


def unframe(message: bytes, count: int | None = None) -> list[bytes]:
    """The blobs of a :func:`frame` message; ``count``, when given, must match their number.

    Raises ``ValueError`` on a truncated message or a count mismatch (a corrupt or foreign
    message must not be silently cut short).
    """
    out: list[bytes] = []
    off, end = 0, len(message)
    while off < end:
        if off + LENGTH_BYTES > end:
            raise ValueError("truncated frame: length prefix cut short")
        n = int.from_bytes(message[off : off + LENGTH_BYTES], "little")
        off += LENGTH_BYTES
        if off + n > end:
            raise ValueError(f"truncated frame: blob of {n} bytes, {end - off} left")
        out.append(bytes(message[off : off + n]))
        off += n
    if count is not None and len(out) != count:
        raise ValueError(f"frame holds {len(out)} blobs, expected {count}")
    return out
