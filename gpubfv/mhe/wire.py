"""Byte encodings of the multiparty share types (registered with gpubfv.serialization).

Share (type 32) body: u8-length protocol name, u8 round, u8 level, u8 basis (0: Q at level,
1: QP), 32-byte digest, sender set and active set as runs (u32 count, then u32 start, u32 length
per run: a ring partial aggregate is one or two runs, so the header does not grow with K),
batch shape, then the residues R[(*batch, rows, N)] bit-packed over the basis.
ShamirShare (type 33): u32 sender, u32 point, R[(L+K, N) over QP].
ThresholdSecretShare (type 34): u32 point, sender runs, R[(L+K, N) over QP].
"""

from __future__ import annotations

import struct

import numpy as np

from gpubfv.backend import Backend
from gpubfv.mhe.shares import Share
from gpubfv.mhe.threshold import ShamirShare, ThresholdSecretShare
from gpubfv.params import Parameters
from gpubfv.serialization import (
    Reader,
    SerializationError,
    _any_host,
    _batch_field,
    _text_field,
    pack_residues,
    packed_size,
    register,
    unpack_residues,
)

PROTOCOLS = ("ckg", "rkg", "gkg", "cks", "pcks")
MAX_RUNS = 1 << 16


def _runs(ids: frozenset[int]) -> bytes:
    vals = sorted(ids)
    runs: list[tuple[int, int]] = []
    for v in vals:
        if runs and runs[-1][0] + runs[-1][1] == v:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    out = struct.pack("<I", len(runs))
    for start, length in runs:
        out += struct.pack("<II", start, length)
    return out


def _read_runs(r: Reader) -> frozenset[int]:
    count = r.u32()
    if count > MAX_RUNS:
        raise SerializationError(f"{count} runs in a peer set")
    out: set[int] = set()
    for _ in range(count):
        start, length = r.u32(), r.u32()
        if length == 0 or length > MAX_RUNS * 16 or start + length > 1 << 32:
            raise SerializationError("malformed peer-set run")
        out.update(range(start, start + length))
    return frozenset(out)


def _moduli(params: Parameters, basis: str, level: int) -> tuple[int, ...]:
    return params.q + params.p if basis == "qp" else params.q[:level]


def _enc_share(s: Share) -> bytes:
    if s.protocol not in PROTOCOLS or s.basis not in ("q", "qp"):
        raise SerializationError(f"unknown share protocol/basis {s.protocol}/{s.basis}")
    data = np.ascontiguousarray(_any_host(s.data))
    moduli = _moduli(s.params, s.basis, s.level)
    head = _text_field(s.protocol, "protocol") + bytes(
        [s.round, s.level, 1 if s.basis == "qp" else 0]
    )
    if len(s.digest) != 32:
        raise SerializationError("share digest must be 32 bytes")
    return (
        head
        + bytes(s.digest)
        + _runs(s.senders)
        + _runs(s.active_set)
        + _batch_field(data.shape[:-2])
        + pack_residues(data, moduli)
    )


def _dec_share(params: Parameters, body: bytes, backend: Backend) -> Share:
    r = Reader(body)
    protocol = r.text()
    if protocol not in PROTOCOLS:
        raise SerializationError(f"unknown share protocol {protocol!r}")
    round_, level, basis_id = r.u8(), r.u8(), r.u8()
    if basis_id not in (0, 1) or round_ not in (1, 2):
        raise SerializationError("malformed share header")
    basis = "qp" if basis_id else "q"
    if basis == "q" and not 1 <= level <= len(params.q):
        raise SerializationError(f"share level {level} outside 1..{len(params.q)}")
    digest = bytes(r.take(32))
    senders = _read_runs(r)
    active = _read_runs(r)
    batch = r.batch_shape()
    moduli = _moduli(params, basis, level)
    need = packed_size(moduli, params.n, batch)
    data = unpack_residues(r.rest(need, "share"), moduli, params.n, batch)
    return Share(
        protocol, params, digest, senders, backend.asarray(data), level, basis, active, round_
    )


def _enc_shamir(s: ShamirShare) -> bytes:
    data = np.ascontiguousarray(_any_host(s.data))
    return struct.pack("<II", s.sender, s.point) + pack_residues(data, s.params.q + s.params.p)


def _dec_shamir(params: Parameters, body: bytes, backend: Backend) -> ShamirShare:
    r = Reader(body)
    sender, point = r.u32(), r.u32()
    moduli = params.q + params.p
    need = packed_size(moduli, params.n)
    data = unpack_residues(r.rest(need, "Shamir share"), moduli, params.n)
    return ShamirShare(params, sender, point, backend.asarray(data))


def _enc_tsk(s: ThresholdSecretShare) -> bytes:
    data = np.ascontiguousarray(_any_host(s.data))
    return (
        struct.pack("<I", s.point) + _runs(s.senders) + pack_residues(data, s.params.q + s.params.p)
    )


def _dec_tsk(params: Parameters, body: bytes, backend: Backend) -> ThresholdSecretShare:
    r = Reader(body)
    point = r.u32()
    senders = _read_runs(r)
    moduli = params.q + params.p
    need = packed_size(moduli, params.n)
    data = unpack_residues(r.rest(need, "threshold share"), moduli, params.n)
    return ThresholdSecretShare(params, point, senders, backend.asarray(data))


register(32, Share, _enc_share, _dec_share)
register(33, ShamirShare, _enc_shamir, _dec_shamir)
register(34, ThresholdSecretShare, _enc_tsk, _dec_tsk)
