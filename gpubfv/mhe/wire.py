"""Byte encodings of the multiparty share types (registered with gpubfv.serialization).

One type id per share type (the type is the protocol; nothing is named by a string):
35 PublicKeyShare, 36 GaloisKeyShare, 37 RelinKeyShareRound1, 38 RelinKeyShareRound2,
39 DecryptionShare, 40 KeySwitchShare, 41 PublicKeySwitchShare. Body::

    [u8 level]          ciphertext shares (39-41) only
    [u32 galois]        GaloisKeyShare only
    digest    32 bytes  CRP seed digest, or the digest of the c1 rows of the batch
    u32 peers           peer-id bound: 1 + the highest sender / active id (0 if none), and
                        <= MAX_PEERS; any other value is refused (one share, one encoding)
    senders, active set as runs: u32 count, then count * (u32 start, u32 length), increasing,
                        disjoint and non-adjacent (canonical); count is checked against peers
                        and the remaining bytes before any run is read, every run as it is
                        read (so the id total is <= peers); both sets together hold at most
                        IDS_PER_BYTE ids per body byte left after them (no frame expands
                        into more ids than 8x its size), and the sets are only expanded
                        after the residue payload has been checked to have its size
    [batch shape]       ciphertext shares only (PCKS: without its trailing axis of 2)
    residues            R[shape over basis]: (L, N) over Q; (D, L+K, N) or (D, 2, L+K, N) over
                        QP; (*batch, level, N) or (*batch, 2, level, N) over q_1..q_level

Compressed wire forms (gpubfv/mhe/compressed.py), values rounded to `bits` bits and carried as
W = ceil(bits/32) little-endian 32-bit words per coefficient, packed as W rows of N values at
widths (32, ..., 32, bits - 32 (W - 1)) ("B[shape at bits]"; a word beyond its width is refused):

    42 CompressedCiphertext: u8 level, u16 bits (1..MAX_COMPRESSED_BITS), batch shape,
       B[c0: (*batch, W, N)], R[c1: (*batch, level, N) over q_1..q_level]
    43 CompressedDecryptionShare: u8 level, u16 bits, then the body of type 39 from the digest
       on (peers, senders and active set as runs, batch shape), with B[(*batch, W, N)] in
       place of the residues

Type 32 (the untyped `Share` with a protocol-name string, before the Party API) is refused with
a message saying so. ShamirShare (33): u32 sender, u32 point, R[(L+K, N) over QP].
ThresholdSecretShare (34): u32 point, sender runs (as above, bound = MAX_PEERS), R[QP].
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from gpubfv.backend import Backend
from gpubfv.mhe.compressed import (
    MAX_COMPRESSED_BITS,
    CompressedCiphertext,
    CompressedDecryptionShare,
    word_widths,
)
from gpubfv.mhe.shares import (
    DecryptionShare,
    GaloisKeyShare,
    KeySwitchShare,
    ProtocolShare,
    PublicKeyShare,
    PublicKeySwitchShare,
    RelinKeyShareRound1,
    RelinKeyShareRound2,
    _CiphertextShare,
)
from gpubfv.mhe.threshold import ShamirShare, ThresholdSecretShare
from gpubfv.params import Parameters
from gpubfv.serialization import (
    Reader,
    SerializationError,
    any_host,
    batch_field,
    bits_size,
    pack_bits,
    pack_residues,
    packed_size,
    register,
    unpack_bits,
    unpack_residues,
)

MAX_PEERS = 1 << 16
# amplification bound: a few hundred bytes of runs must not become 2 * 65536 Python ints; a
# real share carries >= N * L residues (kilobytes), far more than peers / 8 bytes
IDS_PER_BYTE = 8
TYPE_IDS: dict[type[ProtocolShare], int] = {
    PublicKeyShare: 35,
    GaloisKeyShare: 36,
    RelinKeyShareRound1: 37,
    RelinKeyShareRound2: 38,
    DecryptionShare: 39,
    KeySwitchShare: 40,
    PublicKeySwitchShare: 41,
}


def _runs(ids: frozenset[int]) -> bytes:
    if ids and not 0 <= min(ids) <= max(ids) < MAX_PEERS:
        raise SerializationError(f"peer ids must lie in 0..{MAX_PEERS - 1}")
    runs: list[list[int]] = []
    for v in sorted(ids):
        if runs and runs[-1][0] + runs[-1][1] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return struct.pack("<I", len(runs)) + b"".join(struct.pack("<II", *r) for r in runs)


def _read_runs(r: Reader, bound: int) -> tuple[tuple[int, int], ...]:
    """Canonical runs of a peer set, checked as they are read; no set is built here.

    The run count is checked against the bound and the bytes left before any run is read, and
    every run must be nonempty, start after the previous one's end plus a gap (strictly
    increasing, disjoint, non-adjacent) and end within `bound`, so the total id count is at
    most `bound` <= MAX_PEERS before anything is expanded.
    """
    count = r.u32()
    if count > bound or 8 * count > r.remaining():
        raise SerializationError(f"{count} runs in a peer set of at most {bound} ids")
    runs = []
    end = -1  # exclusive end of the previous run; -1 allows a run starting at 0
    for _ in range(count):
        start, length = r.u32(), r.u32()
        if length == 0 or start <= end or start + length > bound:
            raise SerializationError(
                f"peer-set run ({start}, {length}) is empty, out of order, adjacent or beyond "
                f"the declared {bound} peers"
            )
        runs.append((start, length))
        end = start + length
    return tuple(runs)


def _runs_end(runs: tuple[tuple[int, int], ...]) -> int:
    return runs[-1][0] + runs[-1][1] if runs else 0


def _check_encodable(ids: int, tail_bytes: int) -> None:
    if ids > IDS_PER_BYTE * tail_bytes:
        raise SerializationError(
            f"{ids} peer ids on a {tail_bytes}-byte payload: beyond the {IDS_PER_BYTE} ids per "
            "byte a receiver accepts"
        )


def _check_id_total(r: Reader, *sets: tuple[tuple[int, int], ...]) -> None:
    total = sum(length for runs in sets for _, length in runs)
    if total > IDS_PER_BYTE * r.remaining():
        raise SerializationError(
            f"{total} peer ids for {r.remaining()} body bytes left (at most {IDS_PER_BYTE} per "
            "byte): refused before any set is built"
        )


def _expand(runs: tuple[tuple[int, int], ...]) -> frozenset[int]:
    return frozenset(i for start, length in runs for i in range(start, start + length))


def _layout(cls: type, params: Parameters, level: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(moduli, fixed leading shape) of the residues of a share type."""
    d = len(_digits(params))
    if cls is PublicKeyShare:
        return params.q, ()
    if cls is GaloisKeyShare:
        return params.q + params.p, (d,)
    if cls in (RelinKeyShareRound1, RelinKeyShareRound2):
        return params.q + params.p, (d, 2)
    return params.q[:level], ((2,) if cls is PublicKeySwitchShare else ())


def _digits(params: Parameters) -> range:
    alpha = max(1, len(params.p))
    return range(0, len(params.q), alpha)


def _encoder(cls: type) -> Any:
    def enc(s: ProtocolShare) -> bytes:
        data = np.ascontiguousarray(any_host(s.data))
        level = s.level if isinstance(s, _CiphertextShare) else 0
        moduli, fixed = _layout(cls, s.params, level)
        out = bytes([level]) if level else b""
        if isinstance(s, GaloisKeyShare):
            out += struct.pack("<I", s.galois)
        if len(s.digest) != 32:
            raise SerializationError("share digest must be 32 bytes")
        ids = s.senders | s.active_set
        bound = max(ids) + 1 if ids else 0
        if bound > MAX_PEERS:
            raise SerializationError(f"peer id {bound - 1} beyond MAX_PEERS {MAX_PEERS}")
        out += bytes(s.digest) + struct.pack("<I", bound) + _runs(s.senders) + _runs(s.active_set)
        tail = b""
        if isinstance(s, _CiphertextShare):
            tail = batch_field(data.shape[: data.ndim - 2 - len(fixed)])
        tail += pack_residues(data, moduli)
        _check_encodable(len(s.senders) + len(s.active_set), len(tail))
        return out + tail

    return enc


def _decoder(cls: type) -> Any:
    def dec(params: Parameters, body: bytes, backend: Backend) -> ProtocolShare:
        r = Reader(body)
        extra: dict[str, Any] = {}
        level = 0
        if issubclass(cls, _CiphertextShare):
            level = r.u8()
            if not 1 <= level <= len(params.q):
                raise SerializationError(f"share level {level} outside 1..{len(params.q)}")
            extra["level"] = level
        if cls is GaloisKeyShare:
            extra["galois"] = r.u32()
        digest = bytes(r.take(32))
        bound = r.u32()
        if bound > MAX_PEERS:
            raise SerializationError(f"{bound} declared peers (at most {MAX_PEERS})")
        senders, active = _read_runs(r, bound), _read_runs(r, bound)
        if bound != max(_runs_end(senders), _runs_end(active)):
            # the encoder writes the tightest bound; any other value is a second encoding
            raise SerializationError(
                f"declared {bound} peers, but the highest id present is "
                f"{max(_runs_end(senders), _runs_end(active)) - 1}"
            )
        _check_id_total(r, senders, active)
        moduli, fixed = _layout(cls, params, level)
        batch = r.batch_shape() if issubclass(cls, _CiphertextShare) else ()
        need = packed_size(moduli, params.n, batch + fixed)
        data = unpack_residues(r.rest(need, cls.__name__), moduli, params.n, batch + fixed)
        return cls(
            params=params,
            digest=digest,
            senders=_expand(senders),
            active_set=_expand(active),
            data=backend.asarray(data),
            **extra,
        )

    return dec


class RetiredShare:
    """Placeholder for wire type 32 (the untyped `Share` before the Party API): never decoded."""

    params: Parameters


def _refuse_retired(params: Parameters, body: bytes, backend: Backend) -> RetiredShare:
    raise SerializationError(
        "type 32 is the retired untyped Share (protocol named by a string); this library "
        "reads only the typed share frames 35..41: re-create the share with gpubfv.mhe.Party"
    )


def _enc_shamir(s: ShamirShare) -> bytes:
    data = np.ascontiguousarray(any_host(s.data))
    return struct.pack("<II", s.sender, s.point) + pack_residues(data, s.params.q + s.params.p)


def _dec_shamir(params: Parameters, body: bytes, backend: Backend) -> ShamirShare:
    r = Reader(body)
    sender, point = r.u32(), r.u32()
    moduli = params.q + params.p
    data = unpack_residues(r.rest(packed_size(moduli, params.n), "Shamir share"), moduli, params.n)
    return ShamirShare(params, sender, point, backend.asarray(data))


def _enc_tsk(s: ThresholdSecretShare) -> bytes:
    data = np.ascontiguousarray(any_host(s.data))
    payload = pack_residues(data, s.params.q + s.params.p)
    _check_encodable(len(s.senders), len(payload))
    return struct.pack("<I", s.point) + _runs(s.senders) + payload


def _dec_tsk(params: Parameters, body: bytes, backend: Backend) -> ThresholdSecretShare:
    r = Reader(body)
    point = r.u32()
    runs = _read_runs(r, MAX_PEERS)
    _check_id_total(r, runs)
    moduli = params.q + params.p
    raw = r.rest(packed_size(moduli, params.n), "threshold share")
    data = unpack_residues(raw, moduli, params.n)
    return ThresholdSecretShare(params, point, _expand(runs), backend.asarray(data))


def _read_level_bits(r: Reader, params: Parameters) -> tuple[int, int]:
    level, bits = r.u8(), struct.unpack("<H", r.take(2))[0]
    if not 1 <= level <= len(params.q):
        raise SerializationError(f"level {level} outside 1..{len(params.q)}")
    if not 1 <= bits <= MAX_COMPRESSED_BITS:
        raise SerializationError(f"compressed width {bits} outside 1..{MAX_COMPRESSED_BITS}")
    return level, bits


def _enc_cct(c: CompressedCiphertext) -> bytes:
    c0, c1 = np.ascontiguousarray(any_host(c.c0)), np.ascontiguousarray(any_host(c.c1))
    head = bytes([c.level]) + struct.pack("<H", c.bits) + batch_field(c.batch_shape)
    return head + pack_bits(c0, word_widths(c.bits)) + pack_residues(c1, c.params.q[: c.level])


def _dec_cct(params: Parameters, body: bytes, backend: Backend) -> CompressedCiphertext:
    r = Reader(body)
    level, bits = _read_level_bits(r, params)
    batch = r.batch_shape()
    widths, moduli, n = word_widths(bits), params.q[:level], params.n
    c0_size = bits_size(widths, n, batch)
    need = c0_size + packed_size(moduli, n, batch)
    raw = r.rest(need, "compressed ciphertext")  # both sizes checked before anything is built
    c0 = unpack_bits(raw[:c0_size], widths, n, batch)
    c1 = unpack_residues(raw[c0_size:], moduli, n, batch)
    return CompressedCiphertext(params, level, bits, backend.asarray(c0), backend.asarray(c1))


def _enc_cshare(s: CompressedDecryptionShare) -> bytes:
    data = np.ascontiguousarray(any_host(s.data))
    if len(s.digest) != 32:
        raise SerializationError("share digest must be 32 bytes")
    ids = s.senders | s.active_set
    bound = max(ids) + 1 if ids else 0
    if bound > MAX_PEERS:
        raise SerializationError(f"peer id {bound - 1} beyond MAX_PEERS {MAX_PEERS}")
    out = bytes([s.level]) + struct.pack("<H", s.bits) + bytes(s.digest)
    out += struct.pack("<I", bound) + _runs(s.senders) + _runs(s.active_set)
    tail = batch_field(data.shape[:-2]) + pack_bits(data, word_widths(s.bits))
    _check_encodable(len(s.senders) + len(s.active_set), len(tail))
    return out + tail


def _dec_cshare(params: Parameters, body: bytes, backend: Backend) -> CompressedDecryptionShare:
    r = Reader(body)
    level, bits = _read_level_bits(r, params)
    digest = bytes(r.take(32))
    bound = r.u32()
    if bound > MAX_PEERS:
        raise SerializationError(f"{bound} declared peers (at most {MAX_PEERS})")
    senders, active = _read_runs(r, bound), _read_runs(r, bound)
    if bound != max(_runs_end(senders), _runs_end(active)):
        raise SerializationError("declared peer bound is not the highest id present plus one")
    _check_id_total(r, senders, active)
    batch = r.batch_shape()
    widths = word_widths(bits)
    raw = r.rest(bits_size(widths, params.n, batch), "compressed decryption share")
    data = unpack_bits(raw, widths, params.n, batch)
    return CompressedDecryptionShare(
        params=params,
        digest=digest,
        senders=_expand(senders),
        level=level,
        bits=bits,
        data=backend.asarray(data),
        active_set=_expand(active),
    )


register(32, RetiredShare, lambda s: b"", _refuse_retired)
register(42, CompressedCiphertext, _enc_cct, _dec_cct)
register(43, CompressedDecryptionShare, _enc_cshare, _dec_cshare)
register(33, ShamirShare, _enc_shamir, _dec_shamir)
register(34, ThresholdSecretShare, _enc_tsk, _dec_tsk)
for _cls, _id in TYPE_IDS.items():
    register(_id, _cls, _encoder(_cls), _decoder(_cls))
