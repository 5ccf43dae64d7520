"""Field-level helpers shared by every codec: a bounds-checked body reader and field writers.

Every reader method checks the remaining length before it slices, so a truncated or forged
body raises `SerializationError` and never allocates more than it was given.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpubfv.backend import Backend
from gpubfv.ring.sampling import SEED_BYTES
from gpubfv.serialization.errors import SerializationError

MAX_BATCH_DIMS = 8
# a shape whose nonzero dims multiply past this cannot be a real batch; refusing it early keeps
# numpy from being asked for an impossible (even if empty) array
MAX_BATCH_ELEMENTS = 1 << 32
MAX_TEXT_BYTES = 255


class Reader:
    """Cursor over a body; every read checks the length (truncation is a SerializationError)."""

    def __init__(self, body: bytes | memoryview) -> None:
        self.buf = memoryview(body).cast("B")
        self.pos = 0

    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.buf) - self.pos

    def take(self, count: int) -> memoryview:
        """The next `count` bytes, or SerializationError if fewer are left."""
        if count < 0 or count > self.remaining():
            raise SerializationError(
                f"truncated body: need {count} bytes at offset {self.pos}, {self.remaining()} left"
            )
        out = self.buf[self.pos : self.pos + count]
        self.pos += count
        return out

    def u8(self) -> int:
        """One unsigned byte."""
        return self.take(1)[0]

    def u32(self) -> int:
        """One little-endian u32."""
        return struct.unpack("<I", self.take(4))[0]

    def count(self, what: str, item_bytes: int, most: int) -> int:
        """A u32 item count, checked against `most` and against the bytes left (each item
        needs at least `item_bytes`), before the caller allocates anything for the items."""
        n = self.u32()
        if n > most:
            raise SerializationError(f"{n} {what} (at most {most})")
        if n * item_bytes > self.remaining():
            raise SerializationError(
                f"{n} {what} cannot fit in the {self.remaining()} bytes left in the body"
            )
        return n

    def text(self) -> str:
        """A u8-length-prefixed UTF-8 string."""
        raw = bytes(self.take(self.u8()))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerializationError(f"label is not UTF-8: {exc}") from None

    def seed(self) -> bytes:
        """A CSPRNG seed of SEED_BYTES bytes."""
        return bytes(self.take(SEED_BYTES))

    def batch_shape(self) -> tuple[int, ...]:
        """`u8 ndim, u32 dim * ndim`, at most MAX_BATCH_DIMS dims and MAX_BATCH_ELEMENTS items."""
        ndim = self.u8()
        if ndim > MAX_BATCH_DIMS:
            raise SerializationError(f"batch with {ndim} dimensions (at most {MAX_BATCH_DIMS})")
        shape = tuple(self.u32() for _ in range(ndim))
        if math.prod(d for d in shape if d) > MAX_BATCH_ELEMENTS:
            raise SerializationError(f"batch shape {shape} is implausibly large")
        return shape

    def rest(self, expected: int, what: str) -> memoryview:
        """The remaining bytes, which must be exactly `expected` long."""
        if self.remaining() != expected:
            raise SerializationError(
                f"{what}: body holds {self.remaining()} bytes where the declared shape needs "
                f"{expected}"
            )
        return self.take(expected)

    def finish(self) -> None:
        """Refuse trailing bytes: one object, one encoding."""
        if self.remaining():
            raise SerializationError(f"{self.remaining()} trailing bytes in body")


def text_field(s: str, what: str) -> bytes:
    """`u8 length + UTF-8` of a short label; `what` names it in the error."""
    raw = s.encode("utf-8")
    if len(raw) > MAX_TEXT_BYTES:
        raise SerializationError(f"{what} longer than {MAX_TEXT_BYTES} bytes")
    return bytes([len(raw)]) + raw


def batch_field(batch: Sequence[int]) -> bytes:
    """`u8 ndim, u32 dim * ndim` of a batch shape (the form `Reader.batch_shape` reads)."""
    if len(batch) > MAX_BATCH_DIMS:
        raise SerializationError(f"batch with {len(batch)} dimensions (at most {MAX_BATCH_DIMS})")
    if any(not 0 <= int(b) < 1 << 32 for b in batch):
        raise SerializationError(f"batch shape {tuple(batch)} does not fit u32 fields")
    return bytes([len(batch)]) + struct.pack(f"<{len(batch)}I", *batch)


def seed_field(seed: Any) -> bytes:
    """A seed as it travels: exactly SEED_BYTES raw bytes."""
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise SerializationError(f"a seed is exactly {SEED_BYTES} bytes")
    return bytes(seed)


def any_host(a: Any) -> np.ndarray:
    """numpy view of an array of either backend (objects do not carry their backend)."""
    return Backend.for_array(a).to_numpy(a)


def check_array(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """Refuse an array that is not uint32 of exactly `shape` before it is packed."""
    if a.dtype != np.uint32 or tuple(a.shape) != shape:
        raise SerializationError(
            f"{what}: array of dtype {a.dtype} and shape {tuple(a.shape)}, expected uint32 {shape}"
        )
