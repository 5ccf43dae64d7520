"""Data codecs: Plaintext, Ciphertext (seeded or not), and the headerless ciphertext chunk."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.ciphertext import Ciphertext, Plaintext
from gpubfv.params import Parameters
from gpubfv.ring.sampling import SEED_BYTES, expand_uniform
from gpubfv.serialization.bitpack import pack_residues, packed_size, unpack_residues
from gpubfv.serialization.errors import SerializationError
from gpubfv.serialization.fields import (
    MAX_BATCH_DIMS,
    MAX_BATCH_ELEMENTS,
    Reader,
    any_host,
    batch_field,
    check_array,
    seed_field,
    text_field,
)
from gpubfv.serialization.format import (
    CHECKSUM_BYTES,
    FLAG_SEEDED,
    TYPE_CIPHERTEXT,
    TYPE_PLAINTEXT,
    Codec,
    Frame,
    add_codec,
    checksum,
)

_CHUNK_PERSON = b"gpubfv-chunk-v2"


# Plaintext ----------------------------------------------------------------------------------
def _enc_pt(pt: Plaintext) -> tuple[int, bytes]:
    p = pt.params
    a = any_host(pt.data)
    if a.dtype != np.uint64 or a.ndim < 1 or a.shape[-1] != p.n:
        raise SerializationError(f"plaintext of dtype {a.dtype} and shape {a.shape}")
    batch = a.shape[:-1]
    try:
        packed = pack_residues(a.reshape(batch + (1, p.n)), (p.t,), np.uint64)
    except SerializationError:
        raise SerializationError(f"plaintext value >= t={p.t}") from None
    return 0, batch_field(batch) + packed


def _dec_pt(f: Frame) -> Plaintext:
    r = Reader(f.body)
    batch = r.batch_shape()
    n, t = f.p.n, f.p.t
    raw = r.rest(packed_size((t,), n, batch), "plaintext")
    arr = unpack_residues(raw, (t,), n, batch, np.uint64).reshape(batch + (n,))
    return Plaintext(f.p, f.backend.asarray(arr))


def _size_pt(pt: Plaintext) -> int:
    batch = tuple(pt.data.shape[:-1])
    return 1 + 4 * len(batch) + packed_size((pt.params.t,), pt.params.n, batch)


# Ciphertext ---------------------------------------------------------------------------------
def _ct_shape(ct: Ciphertext) -> tuple[tuple[int, ...], int, int]:
    p = ct.params
    shape = tuple(ct.data.shape)
    if len(shape) < 3 or shape[-1] != p.n:
        raise SerializationError(f"ciphertext data of shape {shape} for N={p.n}")
    batch, size, level = shape[:-3], shape[-3], shape[-2]
    if size not in (2, 3) or not 1 <= level <= len(p.q):
        raise SerializationError(f"ciphertext of size {size} at level {level} is not valid here")
    if ct.seed is not None and size != 2:
        raise SerializationError("only size-2 ciphertexts carry a seed")
    return batch, size, level


def _enc_ct(ct: Ciphertext) -> tuple[int, bytes]:
    p = ct.params
    batch, size, level = _ct_shape(ct)
    a = any_host(ct.data)
    check_array(a, batch + (size, level, p.n), "ciphertext")
    head = bytes([size, level]) + batch_field(batch)
    moduli = p.q[:level]
    if ct.seed is None:
        return 0, head + pack_residues(a, moduli)
    seeded = text_field(ct.seed_domain, "seed domain") + seed_field(ct.seed)
    return FLAG_SEEDED, head + seeded + pack_residues(a[..., 0, :, :], moduli)


def _dec_ct(f: Frame) -> Ciphertext:
    r, params, backend = Reader(f.body), f.p, f.backend
    size, level = r.u8(), r.u8()
    if size not in (2, 3):
        raise SerializationError(f"ciphertext size {size} (must be 2 or 3)")
    if not 1 <= level <= len(params.q):
        raise SerializationError(f"ciphertext level {level} outside 1..{len(params.q)}")
    batch = r.batch_shape()
    n, moduli = params.n, params.q[:level]
    if f.flags & FLAG_SEEDED:
        if size != 2:
            raise SerializationError("a seeded ciphertext has size 2")
        domain = r.text()
        seed = r.seed()
        c0 = unpack_residues(r.rest(packed_size(moduli, n, batch), "ciphertext"), moduli, n, batch)
        qb = f.context.q_basis(level)
        c1 = qb.intt(expand_uniform(seed, domain, qb, batch))
        data = backend.xp.stack([backend.asarray(c0), c1], axis=-3)
        return Ciphertext(params, backend.xp.ascontiguousarray(data), seed, domain)
    full = batch + (size,)
    data = unpack_residues(r.rest(packed_size(moduli, n, full), "ciphertext"), moduli, n, full)
    return Ciphertext(params, backend.asarray(data))


def _size_ct(ct: Ciphertext) -> int:
    p = ct.params
    batch, size, level = _ct_shape(ct)
    head = 2 + 1 + 4 * len(batch)
    moduli = p.q[:level]
    if ct.seed is None:
        return head + packed_size(moduli, p.n, batch + (size,))
    return head + 1 + len(ct.seed_domain.encode()) + SEED_BYTES + packed_size(moduli, p.n, batch)


add_codec(Codec(TYPE_PLAINTEXT, Plaintext, _enc_pt, _dec_pt, 0, _size_pt))
add_codec(Codec(TYPE_CIPHERTEXT, Ciphertext, _enc_ct, _dec_ct, FLAG_SEEDED, _size_ct))


# Headerless ciphertext chunk ----------------------------------------------------------------
def ciphertext_body_size(
    params: Parameters, batch: Sequence[int], level: int, c1_only: bool = False
) -> int:
    """len(ciphertext_body(ct, c1_only)) for a size-2 ciphertext of that batch and level."""
    comps = 1 if c1_only else 2
    return packed_size(params.q[:level], params.n, tuple(batch) + (comps,)) + CHECKSUM_BYTES


def ciphertext_body(ct: Ciphertext, c1_only: bool = False) -> bytes:
    """The headerless chunk form of a size-2 ciphertext, for peers that already agree on the
    parameters, level and batch: R[(*batch, c, level, N) over q_1..q_level] with c = 2 (c0, c1)
    or 1 (c1 only, enough for decryption shares), then an 8-byte BLAKE2b-64 checksum (corruption
    only, no MAC). Bit-packed at residue width, like every frame body; a seed is not
    carried (c1 travels itself), so the decoded ciphertext is seedless."""
    p = ct.params
    batch, size, level = _ct_shape(ct)
    if size != 2:
        raise SerializationError(f"a ciphertext chunk is size 2, not {size} (relinearize first)")
    a = any_host(ct.data)
    check_array(a, batch + (2, level, p.n), "ciphertext")
    part = a[..., 1:, :, :] if c1_only else a
    packed = pack_residues(np.ascontiguousarray(part), p.q[:level])
    return packed + checksum(packed, _CHUNK_PERSON)


def ciphertext_from_body(
    params: Any,
    body: bytes | bytearray | memoryview,
    batch: Sequence[int],
    level: int,
    c1_only: bool = False,
    backend: Backend | str | None = None,
) -> Ciphertext:
    """Inverse of `ciphertext_body`. `params` is Parameters or a Context (then its backend);
    with `c1_only`, c0 comes back as zeros. The length is checked against (batch, level)
    before anything is allocated; a wrong length, a failed checksum or an unreduced value is a
    SerializationError."""
    if isinstance(params, Parameters):
        be = backend if isinstance(backend, Backend) else get_backend(backend or "cpu")
    else:
        ctx_params, ctx_be = getattr(params, "params", None), getattr(params, "backend", None)
        if not isinstance(ctx_params, Parameters) or not isinstance(ctx_be, Backend):
            raise TypeError(f"ciphertext_from_body takes Parameters or a Context, not {params!r}")
        params, be = ctx_params, ctx_be
    batch = tuple(int(b) for b in batch)
    if len(batch) > MAX_BATCH_DIMS or any(b < 0 for b in batch):
        raise SerializationError(f"chunk batch shape {batch} is not a batch")
    if math.prod(b for b in batch if b) > MAX_BATCH_ELEMENTS:
        raise SerializationError(f"chunk batch shape {batch} is implausibly large")
    if not 1 <= int(level) <= len(params.q):
        raise SerializationError(f"chunk level {level} outside 1..{len(params.q)}")
    try:
        view = memoryview(body).cast("B")
    except TypeError as exc:
        raise SerializationError(f"cannot read {type(body).__name__} as bytes: {exc}") from None
    need = ciphertext_body_size(params, batch, level, c1_only)
    if len(view) != need:
        raise SerializationError(
            f"ciphertext chunk of batch {batch} at level {level} needs {need} bytes, "
            f"got {len(view)}"
        )
    packed = view[: need - CHECKSUM_BYTES]
    if checksum(packed, _CHUNK_PERSON) != bytes(view[need - CHECKSUM_BYTES :]):
        raise SerializationError("ciphertext chunk fails its checksum: corrupted data")
    moduli, n = params.q[:level], params.n
    comps = 1 if c1_only else 2
    part = unpack_residues(packed, moduli, n, batch + (comps,))
    if c1_only:
        data = np.zeros(batch + (2, level, n), dtype=np.uint32)
        data[..., 1:, :, :] = part
    else:
        data = part
    return Ciphertext(params, be.asarray(data))
