"""Pairwise-mask secure aggregation (Bonawitz et al., CCS 2017) without a server: the
quadratic-key-agreement baseline for the communication comparison."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import numpy as np

from dmhe.aggregators.base import TOPOLOGY_OPTIONS, AggregatorBase, Option, check_int64
from dmhe.collectives import all_reduce_array
from dmhe.transport import Transport

__all__ = ["MODP_2048_G", "MODP_2048_P", "PairwiseMaskAggregator", "expand_mask"]

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
        """This side's public value (32 bytes X25519, 256 bytes MODP)."""
        if self.kind == "x25519":
            from cryptography.hazmat.primitives import serialization

            return self._x_priv.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return pow(MODP_2048_G, self._dh_priv, MODP_2048_P).to_bytes(256, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        """The Diffie-Hellman secret with ``peer_public``; ``ValueError`` on a bad value."""
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


class PairwiseMaskAggregator(AggregatorBase):
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
    OPTIONS = (
        Option("rekey_each_round", (bool,), True, "repeat the key agreement every round"),
        Option("force_modp", (bool,), False, "finite-field DH even when X25519 is available"),
        *TOPOLOGY_OPTIONS,
    )

    def __init__(self, world_size: int | None = None, **options: Any) -> None:
        super().__init__(world_size, **options)
        self.rekey_each_round: bool = self.options["rekey_each_round"]
        self.force_modp: bool = self.options["force_modp"]
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
        """Pairwise key agreement (all-to-all)."""
        self._agree(transport)
        self._round = 0

    def mask(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """This peer's masked vector (int64 view of ``values + Σ±masks mod 2**64``)."""
        values = check_int64(values)
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

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        """Mask, then ring all-reduce: the masks cancel in the exact sum."""
        self.timings.clear()
        self.contributors = transport.world_size
        t0 = time.perf_counter()
        if self.rekey_each_round and self._round > 0:
            self._agree(transport)
        t1 = time.perf_counter()
        masked = self.mask(transport, values)
        t2 = time.perf_counter()
        out = all_reduce_array(
            transport, masked, self.topology_for(transport.world_size, masked.nbytes)
        )
        t3 = time.perf_counter()
        self.timings["communicate"] = (t1 - t0) + (t3 - t2)
        self.timings["encrypt"] = t2 - t1
        return out
