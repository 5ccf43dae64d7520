"""Aggregation strategies: what peers do with their quantized updates to get the exact sum.

A strategy (:class:`Aggregator`) is per peer and separate from the transport (how bytes move),
as in Flower. Every strategy returns the exact int64 sum over all peers, identical on every
peer. The ring helpers move ``2·(K-1)/K`` times the payload per peer, whatever K is.

Strategies are looked up by mode name in :data:`AGGREGATORS`; ``"encrypted"`` is imported lazily
from ``dmhe.encrypted`` so that the plaintext baselines work without the crypto library.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from dmhe.transport import Transport

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "PairwiseMaskAggregator",
    "PlaintextAggregator",
    "get_aggregator_class",
    "make_aggregator",
    "ring_all_gather",
    "ring_allreduce",
    "ring_reduce_scatter",
    "split_chunks",
]

T = TypeVar("T")

#: The int64 sums wrap modulo 2**64; a sum is exact when its magnitude stays below 2**63.
INT64_MODULUS = 1 << 64


@runtime_checkable
class Aggregator(Protocol):
    """Per-peer aggregation strategy.

    Attributes:
        name: registry name.
        modulus: the sum is computed modulo this integer; it is exact when every coordinate of
            the true sum lies in ``(-modulus/2, modulus/2)``. The trainer checks that bound up
            front with :func:`dmhe.quantize.check_no_wrap`.
        timings: seconds spent in phases of the last ``allreduce_sum`` call, keys among
            ``"encrypt"``, ``"communicate"``, ``"decrypt"``. The strategy clears and fills it.
    """

    name: str
    modulus: int
    timings: dict[str, float]

    def setup(self, transport: Transport) -> None:
        """Once, collectively, before the first round (keys, ...)."""
        ...

    def allreduce_sum(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """``values``: int64, 1-D, same length on every peer. Returns the exact int64 sum."""
        ...


# --------------------------------------------------------------------------- ring helpers


def split_chunks(values: np.ndarray, k: int) -> list[np.ndarray]:
    """K contiguous chunks whose lengths differ by at most one (some may be empty)."""
    return list(np.array_split(values, k))


def ring_reduce_scatter(
    transport: Transport,
    chunks: Sequence[T],
    *,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes, int], T],
    combine: Callable[[T, T], T],
) -> tuple[int, T]:
    """Ring reduce-scatter of K chunks; returns ``(index, reduced chunk)`` for this peer.

    After K-1 steps peer r holds chunk ``(r + 1) % K`` combined over all peers. At step s peer r
    sends its running chunk ``(r - s) % K`` to ``r + 1`` and folds the chunk ``(r - s - 1) % K``
    received from ``r - 1`` into its own. ``decode(buf, index)`` gets the chunk index so that it
    can recover shapes. ``combine`` must be associative and commutative; every chunk is reduced
    along one path, so every peer ends up with the same bits even for floats.
    """
    k, r = transport.world_size, transport.rank
    if len(chunks) != k:
        raise ValueError(f"need {k} chunks, got {len(chunks)}")
    acc = list(chunks)
    nxt, prv = (r + 1) % k, (r - 1) % k
    for s in range(k - 1):
        send_idx = (r - s) % k
        recv_idx = (r - s - 1) % k
        transport.send(nxt, encode(acc[send_idx]))
        incoming = decode(transport.recv(prv), recv_idx)
        acc[recv_idx] = combine(acc[recv_idx], incoming)
    own = (r + 1) % k
    return own, acc[own]


def ring_all_gather(
    transport: Transport,
    index: int,
    chunk: T,
    *,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes, int], T],
) -> list[T]:
    """Ring all-gather: peer r starts with chunk ``index`` (``(r + 1) % K`` after reduce-scatter)
    and ends with all K chunks in order. Each chunk crosses each link once."""
    k, r = transport.world_size, transport.rank
    out: list[Any] = [None] * k
    out[index] = chunk
    nxt, prv = (r + 1) % k, (r - 1) % k
    for s in range(k - 1):
        send_idx = (index - s) % k
        recv_idx = (index - s - 1) % k
        transport.send(nxt, encode(out[send_idx]))
        out[recv_idx] = decode(transport.recv(prv), recv_idx)
    return out


def _encode_array(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def ring_allreduce(transport: Transport, values: np.ndarray) -> np.ndarray:
    """Ring all-reduce (sum) of a 1-D int64 or float array; identical result on every peer.

    int64 addition wraps modulo 2**64 (numpy does not raise on array overflow).
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if transport.world_size == 1:
        return values.copy()
    dtype = np.dtype(values.dtype).newbyteorder("<")

    def decode(buf: bytes, _idx: int) -> np.ndarray:
        return np.frombuffer(buf, dtype=dtype).astype(values.dtype)

    chunks = split_chunks(values.copy(), transport.world_size)
    idx, red = ring_reduce_scatter(
        transport, chunks, encode=_encode_array, decode=decode, combine=np.add
    )
    parts = ring_all_gather(transport, idx, red, encode=_encode_array, decode=decode)
    return np.concatenate(parts)


def _check_int64(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype != np.int64 or values.ndim != 1:
        raise TypeError(f"values must be a 1-D int64 array, got {values.dtype} {values.shape}")
    return values


# --------------------------------------------------------------------------- plaintext


class PlaintextAggregator:
    """Ring all-reduce of the int64 updates in the clear: the baseline with no privacy."""

    name = "plaintext"
    modulus = INT64_MODULUS

    def __init__(self, world_size: int | None = None, **_options: Any) -> None:
        self.timings: dict[str, float] = {}

    def setup(self, transport: Transport) -> None:
        pass

    def allreduce_sum(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        values = _check_int64(values)
        self.timings.clear()
        t0 = time.perf_counter()
        out = ring_allreduce(transport, values)
        self.timings["communicate"] = time.perf_counter() - t0
        return out

    def allreduce_sum_float(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """Float ring all-reduce for unquantized plaintext training."""
        self.timings.clear()
        t0 = time.perf_counter()
        out = ring_allreduce(transport, np.asarray(values, dtype=np.float64))
        self.timings["communicate"] = time.perf_counter() - t0
        return out


# --------------------------------------------------------------------------- pairwise masks

# RFC 3526 group 14 (2048-bit MODP, generator 2): the fallback when `cryptography` is absent.
MODP_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
MODP_2048_G = 2


class _KeyAgreement:
    """X25519 via `cryptography` when installed, else finite-field DH over MODP group 14."""

    def __init__(self, *, force_modp: bool = False) -> None:
        self.kind = "modp2048"
        if not force_modp:
            try:
                from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
            except ImportError:
                pass
            else:
                self.kind = "x25519"
                self._x_priv = X25519PrivateKey.generate()
                return
        # 256-bit exponent: ~128-bit security against discrete-log shortcuts in group 14.
        self._dh_priv = int.from_bytes(os.urandom(32), "big") | 1

    def public_bytes(self) -> bytes:
        if self.kind == "x25519":
            from cryptography.hazmat.primitives import serialization

            return self._x_priv.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return pow(MODP_2048_G, self._dh_priv, MODP_2048_P).to_bytes(256, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        if self.kind == "x25519":
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

            return self._x_priv.exchange(X25519PublicKey.from_public_bytes(peer_public))
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < MODP_2048_P - 1:
            raise ValueError("invalid Diffie-Hellman public value")
        return pow(y, self._dh_priv, MODP_2048_P).to_bytes(256, "big")


def expand_mask(key: bytes, round_index: int, n: int) -> np.ndarray:
    """``n`` uniform uint64 words from SHAKE-256(key || round): the pair's one-time mask."""
    xof = hashlib.shake_256(b"dmhe-secagg-mask" + key + round_index.to_bytes(8, "little"))
    return np.frombuffer(xof.digest(8 * n), dtype="<u8").astype(np.uint64)


class PairwiseMaskAggregator:
    """Pairwise-mask secure aggregation after Bonawitz et al. (CCS 2017), without a server.

    Every pair (i, j) agrees on a key by Diffie-Hellman (all-to-all: K-1 public keys sent and
    received per peer, so total traffic is quadratic in K); peer i adds the pair's mask when
    i < j and subtracts it when i > j, modulo 2**64, so the masks cancel in the sum. The masked
    vectors are summed with the same ring all-reduce as the plaintext baseline.

    With ``rekey_each_round=True`` (the default, as in Bonawitz et al.) the key agreement is
    repeated every round, so the quadratic traffic shows up in every round's byte count. This
    baseline has no dropout recovery (no secret-shared keys): a dropout aborts the round.
    """

    name = "secagg"
    modulus = INT64_MODULUS

    def __init__(
        self,
        world_size: int | None = None,
        *,
        rekey_each_round: bool = True,
        force_modp: bool = False,
        **_options: Any,
    ) -> None:
        self.rekey_each_round = rekey_each_round
        self.force_modp = force_modp
        self.timings: dict[str, float] = {}
        self._pair_keys: dict[int, bytes] = {}
        self._round = 0

    def _agree(self, transport: Transport) -> None:
        ka = _KeyAgreement(force_modp=self.force_modp)
        pub = ka.public_bytes()
        r, k = transport.rank, transport.world_size
        for j in range(k):
            if j != r:
                transport.send(j, pub)
        keys = {}
        for j in range(k):
            if j == r:
                continue
            secret = ka.shared_secret(transport.recv(j))
            lo, hi = min(r, j), max(r, j)
            keys[j] = hashlib.sha256(
                b"dmhe-secagg-key" + lo.to_bytes(4, "little") + hi.to_bytes(4, "little") + secret
            ).digest()
        self._pair_keys = keys

    def setup(self, transport: Transport) -> None:
        self._agree(transport)
        self._round = 0

    def mask(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """This peer's masked vector (int64 view of ``values + Σ±masks mod 2**64``)."""
        values = _check_int64(values)
        if not self._pair_keys and transport.world_size > 1:
            raise RuntimeError("PairwiseMaskAggregator.setup was not called")
        acc = values.view(np.uint64).copy()
        for j, key in self._pair_keys.items():
            m = expand_mask(key, self._round, values.size)
            if transport.rank < j:
                acc += m
            else:
                acc -= m
        self._round += 1
        return acc.view(np.int64)

    def allreduce_sum(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        self.timings.clear()
        t0 = time.perf_counter()
        if self.rekey_each_round and self._round > 0:
            self._agree(transport)
        t1 = time.perf_counter()
        masked = self.mask(transport, values)
        t2 = time.perf_counter()
        out = ring_allreduce(transport, masked)
        t3 = time.perf_counter()
        self.timings["communicate"] = (t1 - t0) + (t3 - t2)
        self.timings["encrypt"] = t2 - t1
        return out


# --------------------------------------------------------------------------- registry


def _lazy(module: str, attr: str) -> Callable[[], type]:
    def load() -> type:
        return getattr(importlib.import_module(module), attr)

    load.__qualname__ = f"lazy({module}.{attr})"
    return load


#: mode name -> aggregator class, or a zero-argument loader returning the class.
AGGREGATORS: dict[str, type | Callable[[], type]] = {
    "plaintext": PlaintextAggregator,
    "secagg": PairwiseMaskAggregator,
    "encrypted": _lazy("dmhe.encrypted", "EncryptedAggregator"),
}


def get_aggregator_class(name: str) -> type:
    try:
        entry = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {sorted(AGGREGATORS)}") from None
    if isinstance(entry, type):
        return entry
    try:
        return entry()
    except ImportError as exc:
        raise ImportError(f"aggregator {name!r} is not available: {exc}") from exc


def make_aggregator(name: str, world_size: int, **options: Any) -> Aggregator:
    """One per-peer strategy instance: ``cls(world_size, **options)``."""
    return get_aggregator_class(name)(world_size, **options)
