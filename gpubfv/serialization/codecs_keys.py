"""Key codecs: SecretKey, PublicKey, SwitchingKey, GaloisKeys (seeded halves regenerated)."""

from __future__ import annotations

import struct

from gpubfv.keys import (
    GaloisKeys,
    PublicKey,
    SecretKey,
    SwitchingKey,
    crp_public_key,
    crp_switching,
)
from gpubfv.params import Parameters
from gpubfv.ring.sampling import SEED_BYTES
from gpubfv.serialization.bitpack import pack_residues, packed_size, unpack_residues
from gpubfv.serialization.errors import SerializationError
from gpubfv.serialization.fields import Reader, any_host, check_array, seed_field, text_field
from gpubfv.serialization.format import (
    FLAG_SEEDED,
    FRAME_OVERHEAD,
    TYPE_GALOIS_KEYS,
    TYPE_PUBLIC_KEY,
    TYPE_SECRET_KEY,
    TYPE_SWITCHING_KEY,
    Codec,
    Frame,
    add_codec,
    from_bytes,
    nbytes,
    to_bytes,
)


def _qp(params: Parameters) -> tuple[int, ...]:
    return params.q + params.p


# Secret key ---------------------------------------------------------------------------------
def _enc_sk(sk: SecretKey) -> tuple[int, bytes]:
    p = sk.params
    a = any_host(sk.data)
    check_array(a, (len(_qp(p)), p.n), "secret key")
    return 0, pack_residues(a, _qp(p))


def _dec_sk(f: Frame) -> SecretKey:
    params, qp = f.p, _qp(f.p)
    arr = unpack_residues(
        Reader(f.body).rest(packed_size(qp, params.n), "secret key"), qp, params.n
    )
    return SecretKey(params, f.backend.asarray(arr))


def _size_sk(sk: SecretKey) -> int:
    return packed_size(_qp(sk.params), sk.params.n)


# Public key ---------------------------------------------------------------------------------
def _enc_pk(pk: PublicKey) -> tuple[int, bytes]:
    p = pk.params
    a = any_host(pk.data)
    check_array(a, (2, len(p.q), p.n), "public key")
    if pk.seed is None:
        return 0, pack_residues(a, p.q)
    return FLAG_SEEDED, seed_field(pk.seed) + pack_residues(a[0], p.q)


def _dec_pk(f: Frame) -> PublicKey:
    r, backend = Reader(f.body), f.backend
    n, q = f.p.n, f.p.q
    if f.flags & FLAG_SEEDED:
        seed = r.seed()
        b = unpack_residues(r.rest(packed_size(q, n), "public key"), q, n)
        a = crp_public_key(f.context, seed)
        return PublicKey(f.p, backend.xp.stack([backend.asarray(b), a]), seed)
    data = unpack_residues(r.rest(packed_size(q, n, (2,)), "public key"), q, n, (2,))
    return PublicKey(f.p, backend.asarray(data), None)


def _size_pk(pk: PublicKey) -> int:
    p = pk.params
    if pk.seed is None:
        return packed_size(p.q, p.n, (2,))
    return SEED_BYTES + packed_size(p.q, p.n)


# Switching key ------------------------------------------------------------------------------
def _digits(params: Parameters) -> int:
    alpha = max(1, len(params.p))
    return -(-len(params.q) // alpha)  # as Context.digits


def _enc_swk(k: SwitchingKey) -> tuple[int, bytes]:
    p = k.params
    qp = _qp(p)
    a = any_host(k.data)
    check_array(a, (_digits(p), 2, len(qp), p.n), "switching key")
    if not 0 <= int(k.galois) < 1 << 32:
        raise SerializationError(f"Galois element {k.galois} does not fit u32")
    head = struct.pack("<I", int(k.galois)) + text_field(k.label, "switching-key label")
    if k.seed is None:
        return 0, head + pack_residues(a, qp)
    return FLAG_SEEDED, head + seed_field(k.seed) + pack_residues(a[:, 0], qp)


def _dec_swk(f: Frame) -> SwitchingKey:
    r, params = Reader(f.body), f.p
    n, qp, D = params.n, _qp(params), _digits(params)
    galois = r.u32()
    if galois != 0 and (galois % 2 == 0 or galois >= 2 * n):
        raise SerializationError(f"Galois element {galois} is not an odd number below 2N={2 * n}")
    label = r.text()
    xp = f.backend.xp
    if f.flags & FLAG_SEEDED:
        seed = r.seed()
        b = unpack_residues(r.rest(packed_size(qp, n, (D,)), "switching key"), qp, n, (D,))
        a = crp_switching(f.context, seed, label)
        data = xp.stack([f.backend.asarray(b), a], axis=1)
        return SwitchingKey(params, data, seed, galois, label)
    data = unpack_residues(r.rest(packed_size(qp, n, (D, 2)), "switching key"), qp, n, (D, 2))
    return SwitchingKey(params, f.backend.asarray(data), None, galois, label)


def _size_swk(k: SwitchingKey) -> int:
    p = k.params
    qp, D = _qp(p), _digits(p)
    head = 4 + 1 + len(k.label.encode("utf-8"))
    if k.seed is None:
        return head + packed_size(qp, p.n, (D, 2))
    return head + SEED_BYTES + packed_size(qp, p.n, (D,))


# Galois keys --------------------------------------------------------------------------------
def _galois_items(gk: GaloisKeys) -> list[tuple[int, SwitchingKey]]:
    items = sorted(gk.keys.items())
    for g, k in items:
        if not isinstance(k, SwitchingKey) or k.galois != g:
            raise SerializationError(f"Galois keys entry {g} holds a key for another element")
        if k.params.fingerprint != gk.params.fingerprint:
            raise SerializationError(f"Galois key {g} belongs to other parameters")
    return items


def _enc_gks(gk: GaloisKeys) -> tuple[int, bytes]:
    parts = [struct.pack("<I", len(gk.keys))]
    for _, k in _galois_items(gk):
        blob = to_bytes(k)
        parts.append(struct.pack("<I", len(blob)) + blob)
    return 0, b"".join(parts)


def _dec_gks(f: Frame) -> GaloisKeys:
    r = Reader(f.body)
    # at most one key per odd element below 2N; each entry is a length and a whole frame
    count = r.count("Galois keys", 4 + FRAME_OVERHEAD, f.p.n)
    handle = f.given_context if f.given_context is not None else f.p
    keys: dict[int, SwitchingKey] = {}
    last = 0
    for _ in range(count):
        blob = r.take(r.u32())
        k = from_bytes(handle, blob, SwitchingKey, None if f.given_context else f.backend)
        if k.galois <= last:
            raise SerializationError(
                f"Galois keys: element {k.galois} zero, repeated or out of increasing order"
            )
        last = k.galois
        keys[k.galois] = k
    r.finish()
    return GaloisKeys(f.p, keys)


def _size_gks(gk: GaloisKeys) -> int:
    return 4 + sum(4 + nbytes(k) for _, k in _galois_items(gk))


add_codec(Codec(TYPE_SECRET_KEY, SecretKey, _enc_sk, _dec_sk, 0, _size_sk))
add_codec(Codec(TYPE_PUBLIC_KEY, PublicKey, _enc_pk, _dec_pk, FLAG_SEEDED, _size_pk))
add_codec(Codec(TYPE_SWITCHING_KEY, SwitchingKey, _enc_swk, _dec_swk, FLAG_SEEDED, _size_swk))
add_codec(Codec(TYPE_GALOIS_KEYS, GaloisKeys, _enc_gks, _dec_gks, 0, _size_gks))
