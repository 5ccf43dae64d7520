"""Bit-packing of residue arrays at their moduli's real bit widths (numba kernels).

Every row of N coefficients of limb l is one little-endian bit stream of
`moduli[l].bit_length()` bits per coefficient, zero-padded to a whole byte; rows follow in C
order. Decoding checks every value against its modulus and every padding bit, so the encoding
is canonical: one array, one byte string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, uint8, uint64

from gpubfv.serialization.errors import SerializationError


# ---- bit packing ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pack_rows(vals, widths, bounds, out):  # pragma: no cover - numba
    """Pack rows (R, N) of uint32/uint64; row r is limb r % len(widths). -1 or bad row index."""
    R, N = vals.shape
    nl = widths.shape[0]
    pos = 0
    for r in range(R):
        limb = r % nl
        w = uint64(widths[limb])
        bound = uint64(bounds[limb])
        acc = uint64(0)
        nb = uint64(0)
        for i in range(N):
            v = uint64(vals[r, i])
            if v >= bound:
                return r
            rem = w
            while rem > uint64(0):
                c = rem if rem < uint64(32) else uint64(32)
                acc |= (v & ((uint64(1) << c) - uint64(1))) << nb
                v >>= c
                nb += c
                rem -= c
                while nb >= uint64(8):
                    out[pos] = uint8(acc & uint64(0xFF))
                    acc >>= uint64(8)
                    nb -= uint64(8)
                    pos += 1
        if nb > uint64(0):
            out[pos] = uint8(acc & uint64(0xFF))
            pos += 1
    return -1


@njit(cache=True, nogil=True)
def _unpack_rows(buf, widths, bounds, out):  # pragma: no cover - numba
    """Inverse of _pack_rows; buf has exactly the packed size. -1 ok, r >= 0 value out of
    range in row r, -2 - r nonzero padding in row r."""
    R, N = out.shape
    nl = widths.shape[0]
    pos = 0
    for r in range(R):
        limb = r % nl
        w = uint64(widths[limb])
        bound = uint64(bounds[limb])
        acc = uint64(0)
        nb = uint64(0)
        for i in range(N):
            v = uint64(0)
            got = uint64(0)
            while got < w:
                c = w - got
                if c > uint64(32):
                    c = uint64(32)
                while nb < c:
                    acc |= uint64(buf[pos]) << nb
                    pos += 1
                    nb += uint64(8)
                v |= (acc & ((uint64(1) << c) - uint64(1))) << got
                acc >>= c
                nb -= c
                got += c
            if v >= bound:
                return r
            out[r, i] = v
        if acc != uint64(0):
            return -2 - r
    return -1


def _row_bytes(n: int, width: int) -> int:
    """Bytes of one packed row: n values of `width` bits, padded to a whole byte."""
    return (n * width + 7) // 8


def packed_size(moduli: Sequence[int], n: int, batch: Sequence[int] = ()) -> int:
    """Bytes of a packed array of shape (*batch, len(moduli), n)."""
    per = sum(_row_bytes(n, int(q).bit_length()) for q in moduli)
    return math.prod(int(b) for b in batch) * per


def _tables(moduli: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Bit widths and exclusive bounds as the kernels read them."""
    widths = np.array([int(q).bit_length() for q in moduli], dtype=np.uint64)
    bounds = np.array([int(q) for q in moduli], dtype=np.uint64)
    return widths, bounds


def pack_residues(a: Any, moduli: Sequence[int], dtype: Any = np.uint32) -> bytes:
    """Pack an array (..., len(moduli), N) at the moduli's bit widths; values must be < modulus.

    `a` is a host array (convert CuPy with `backend.to_numpy` first). Residues are uint32;
    plaintexts pack as uint64 over moduli=(t,).
    """
    a = np.asarray(a)
    if a.dtype != dtype or a.ndim < 1 or (a.ndim >= 2 and a.shape[-2] != len(moduli)):
        raise SerializationError(
            f"cannot pack array of dtype {a.dtype} and shape {a.shape} over {len(moduli)} moduli"
        )
    if a.ndim == 1 and len(moduli) != 1:
        raise SerializationError("a 1-d array packs over exactly one modulus")
    n = a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(-1, n))
    widths, bounds = _tables(moduli)
    out = np.empty(packed_size(moduli, n, a.shape[:-2] if a.ndim >= 2 else ()), dtype=np.uint8)
    if flat.shape[0] and n:
        bad = _pack_rows(flat, widths, bounds, out)
        if bad >= 0:
            limb = bad % len(moduli)
            raise SerializationError(
                f"coefficient >= modulus {moduli[limb]} in limb {limb}: not a reduced array"
            )
    return out.tobytes()


def unpack_residues(
    buf: bytes | memoryview,
    moduli: Sequence[int],
    n: int,
    batch: Sequence[int] = (),
    dtype: Any = np.uint32,
) -> np.ndarray:
    """Inverse of `pack_residues`: a numpy array (*batch, len(moduli), n); checks every value."""
    if not moduli or n < 1 or any(int(b) < 0 for b in batch):
        raise SerializationError(f"cannot unpack {len(moduli)} moduli, n={n}, batch {batch}")
    # the size is checked before the output exists: a forged shape allocates nothing
    size = packed_size(moduli, n, batch)
    if len(buf) != size:
        raise SerializationError(f"packed array needs {size} bytes, got {len(buf)}")
    shape = tuple(int(b) for b in batch) + (len(moduli), n)
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1, n)
    if flat.shape[0] and n:
        widths, bounds = _tables(moduli)
        src = np.frombuffer(buf, dtype=np.uint8)
        code = _unpack_rows(src, widths, bounds, flat)
        if code >= 0:
            limb = code % len(moduli)
            raise SerializationError(
                f"coefficient >= modulus {moduli[limb]} in limb {limb}: corrupted or foreign data"
            )
        if code <= -2:
            raise SerializationError("nonzero padding bits in a packed row: corrupted data")
    return out


# ---- fixed-width words (compressed c0 and shares) ----------------------------------------------
def _width_tables(widths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    if not widths or any(not 1 <= int(w) <= 32 for w in widths):
        raise SerializationError(f"word widths {tuple(widths)} must each be 1..32 bits")
    w = np.array([int(v) for v in widths], dtype=np.uint64)
    return w, np.array([1 << int(v) for v in widths], dtype=np.uint64)


def bits_size(widths: Sequence[int], n: int, batch: Sequence[int] = ()) -> int:
    """Bytes of a packed word array (*batch, len(widths), n) at exactly `widths` bits."""
    per = sum(_row_bytes(n, int(w)) for w in widths)
    return math.prod(int(b) for b in batch) * per


def pack_bits(a: Any, widths: Sequence[int]) -> bytes:
    """Pack uint32 words (..., len(widths), N), row l at exactly widths[l] bits (< 2^width)."""
    a = np.asarray(a)
    if a.dtype != np.uint32 or a.ndim < 2 or a.shape[-2] != len(widths):
        raise SerializationError(
            f"cannot pack words of dtype {a.dtype} and shape {a.shape} at {len(widths)} widths"
        )
    w, bounds = _width_tables(widths)
    n = a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(-1, n))
    out = np.empty(bits_size(widths, n, a.shape[:-2]), dtype=np.uint8)
    if flat.shape[0] and n and _pack_rows(flat, w, bounds, out) >= 0:
        raise SerializationError(f"a word exceeds its width {tuple(widths)}: not canonical")
    return out.tobytes()


def unpack_bits(
    buf: bytes | memoryview, widths: Sequence[int], n: int, batch: Sequence[int] = ()
) -> np.ndarray:
    """Inverse of `pack_bits`: uint32 (*batch, len(widths), n); size checked before allocating."""
    w, bounds = _width_tables(widths)
    if n < 1 or any(int(b) < 0 for b in batch):
        raise SerializationError(f"cannot unpack words of n={n}, batch {batch}")
    size = bits_size(widths, n, batch)
    if len(buf) != size:
        raise SerializationError(f"packed words need {size} bytes, got {len(buf)}")
    out = np.empty(tuple(int(b) for b in batch) + (len(widths), n), dtype=np.uint32)
    flat = out.reshape(-1, n)
    if flat.shape[0]:
        code = _unpack_rows(np.frombuffer(buf, dtype=np.uint8), w, bounds, flat)
        if code != -1:
            raise SerializationError("packed words out of range or with nonzero padding")
    return out
