"""A reusable fuzz driver for wire encodings: `fuzz_frame(blob, decode, encode, ...)`.

One call runs, on the encoding `blob` of one small object:

- truncation at every byte, and every single-bit flip of the whole encoding: must raise
  SerializationError (the checksum sees every flip, the length field every cut); with
  `max_positions`, a larger encoding gets every cut and flip in its header, the first
  `head_bytes` of its body and its last 16 bytes, and a random sample of the positions between
  (`FuzzReport.exhaustive` says which one ran);
- "lying sender" mutations that keep the encoding self-consistent (`reseal` recomputes the
  checksum, since it is no MAC): bit flips in the fields near the start of the body, every byte
  offset of the head patched with huge u32 counts (0xFFFFFFFF, 2^31, 2^24, 0) and 0xFF bytes,
  oversized length fields, and random bodies of random lengths;
- random garbage of random lengths.

The verdict of every case: a SerializationError, or, for resealed mutations only, an object that
re-encodes to exactly the bytes it came from (a valid encoding is never turned into a different
object). Any other exception, a non-canonical success, more than `max_case_s` seconds or more
than `max_peak_bytes` of traced allocation in one case is a failure. Share types of gpubfv.mhe
plug in with one call: `fuzz_frame(to_bytes(share), lambda b: from_bytes(p, b, Share), to_bytes)`.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpubfv.serialization import (
    CHECKSUM_BYTES,
    HEADER_BYTES,
    LENGTH_OFFSET,
    SerializationError,
    reseal,
)

HUGE_U32 = (0xFFFFFFFF, 0x80000000, 0x01000000, 0x0000FFFF, 0)


@dataclass
class FuzzReport:
    """What one `fuzz_frame` call ran and the worst case it met."""

    cases: int = 0
    decoded: int = 0  # resealed mutations that were valid encodings (and re-encoded exactly)
    seconds: float = 0.0
    worst_case_s: float = 0.0
    worst_peak_bytes: int = 0
    failures: list[str] = field(default_factory=list)
    exhaustive: bool = True  # every cut and every bit flip (not a sample of them)

    def add(self, other: FuzzReport) -> FuzzReport:
        """Sum of two reports (worst values are maxima)."""
        return FuzzReport(
            self.cases + other.cases,
            self.decoded + other.decoded,
            self.seconds + other.seconds,
            max(self.worst_case_s, other.worst_case_s),
            max(self.worst_peak_bytes, other.worst_peak_bytes),
            self.failures + other.failures,
            self.exhaustive and other.exhaustive,
        )


def _u32_patch(b: bytes, at: int, value: int) -> bytes:
    return b[:at] + struct.pack("<I", value) + b[at + 4 :]


def positions(
    n: int, framed: bool, head_bytes: int, most: int | None, rng: np.random.Generator
) -> list[int]:
    """Byte offsets to cut at and flip: all `n`, or (if more than `most`) every offset of the
    header, the body's head and the last 16 bytes, plus a sorted random sample of the rest."""
    if most is None or n <= most:
        return list(range(n))
    edge = (HEADER_BYTES if framed else 0) + head_bytes
    fixed = set(range(min(n, edge))) | set(range(max(0, n - 16), n))
    middle = np.array(sorted(set(range(n)) - fixed), dtype=np.int64)
    take = max(0, min(len(middle), most - len(fixed)))
    return sorted(fixed | set(rng.choice(middle, size=take, replace=False).tolist()))


def _cases(
    blob: bytes,
    framed: bool,
    rng: np.random.Generator,
    head_bytes: int,
    random_bodies: int,
    at: list[int],
) -> Iterator[tuple[str, bytes, bool]]:
    """(description, bytes, resealed) for every case; cuts and flips at the offsets `at`."""
    n = len(blob)
    for cut in at:
        yield f"truncated to {cut}", blob[:cut], False
    yield "one byte appended", blob + b"\0", False
    for byte in at:
        for bit in range(8):
            mutated = bytearray(blob)
            mutated[byte] ^= 1 << bit
            yield f"bit {8 * byte + bit} flipped", bytes(mutated), False
    start = HEADER_BYTES if framed else 0
    end = n - CHECKSUM_BYTES
    head = range(start, min(end, start + head_bytes))
    for at in head:
        for bit in range(8):
            mutated = bytearray(blob)
            mutated[at] ^= 1 << bit
            yield f"resealed flip of byte {at} bit {bit}", bytes(mutated), True
        mutated = bytearray(blob)
        mutated[at] = 0xFF
        yield f"resealed 0xFF at {at}", bytes(mutated), True
        if at + 4 <= end:
            for v in HUGE_U32:
                yield f"resealed u32 {v:#x} at {at}", _u32_patch(blob, at, v), True
    if framed:
        body_len = end - HEADER_BYTES
        for v in (0xFFFFFFFF, 1 << 31, body_len + 1, max(0, body_len - 1), 0):
            yield f"length field {v}", _u32_patch(blob, LENGTH_OFFSET, v), True
    for i in range(random_bodies):
        size = int(rng.integers(0, 2 * max(1, end - start) + 16))
        body = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        if framed:
            header = _u32_patch(blob[:HEADER_BYTES], LENGTH_OFFSET, size)
            yield f"random body {i} of {size} bytes", header + body + bytes(CHECKSUM_BYTES), True
        else:
            yield f"random body {i} of {size} bytes", body + bytes(CHECKSUM_BYTES), True
        garbage = rng.integers(0, 256, size=size + HEADER_BYTES, dtype=np.uint8).tobytes()
        yield f"garbage {i} of {len(garbage)} bytes", garbage, False


def fuzz_frame(
    blob: bytes,
    decode: Callable[[bytes], Any],
    encode: Callable[[Any], bytes],
    *,
    framed: bool = True,
    seal: Callable[[bytes], bytes] = reseal,
    head_bytes: int = 64,
    random_bodies: int = 32,
    seed: int = 0,
    max_case_s: float = 1.0,
    max_peak_bytes: int = 64 << 20,
    max_failures: int = 10,
    max_positions: int | None = None,
) -> FuzzReport:
    """Run every case of the module docstring on `blob` (a valid encoding of a small object).

    `decode(bytes)` and `encode(obj)` are the codec under test; `framed=False` for headerless
    forms (no header to keep; `seal` must then recompute their own trailing checksum).
    `max_positions` caps the byte offsets cut at and flipped (None: every offset).
    """
    assert encode(decode(blob)) == blob, "fuzz_frame needs a valid, canonical encoding"
    rng = np.random.default_rng(seed)  # test inputs only
    at = positions(len(blob), framed, head_bytes, max_positions, rng)
    report = FuzzReport(exhaustive=len(at) == len(blob))
    started = time.perf_counter()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        for what, data, resealed in _cases(blob, framed, rng, head_bytes, random_bodies, at):
            if resealed and len(data) >= CHECKSUM_BYTES:
                data = seal(data)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            verdict = ""
            try:
                obj = decode(data)
            except SerializationError:
                obj = None
            except Exception as exc:  # noqa: BLE001 - every other exception is the finding
                verdict = f"{type(exc).__name__}: {exc}"
                obj = None
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] - base
            report.cases += 1
            report.worst_case_s = max(report.worst_case_s, dt)
            report.worst_peak_bytes = max(report.worst_peak_bytes, peak)
            if obj is not None:
                if not resealed:
                    verdict = "decoded without raising"
                else:
                    try:
                        same = encode(obj) == data
                    except SerializationError as exc:
                        same, verdict = False, f"decoded object does not re-encode: {exc}"
                    if not same and not verdict:
                        verdict = "decoded to an object with another encoding"
                    report.decoded += same
            if dt > max_case_s:
                verdict = verdict or f"took {dt:.2f} s"
            if peak > max_peak_bytes:
                verdict = verdict or f"allocated {peak / 2**20:.1f} MiB"
            if verdict and len(report.failures) < max_failures:
                report.failures.append(f"{what}: {verdict}")
    finally:
        if not tracing:
            tracemalloc.stop()
    report.seconds = time.perf_counter() - started
    return report
