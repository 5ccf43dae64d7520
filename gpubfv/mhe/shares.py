"""Protocol shares: small, serializable, and bound to what they belong to.

Every share names its protocol, the parameter fingerprint, the digest of what it was computed
for (a CRP seed or a ciphertext), the sender, and (for threshold runs) the active set. Combining
shares that differ in any of these raises `ShareMismatch` naming the field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.ciphertext import Ciphertext
from gpubfv.params import Parameters


class ShareMismatch(ValueError):
    """Shares that do not belong together were combined."""


class ShareReplay(RuntimeError):
    """A second, different share for the same CRP/ciphertext and key share was requested."""


def ciphertext_digest(ct: Ciphertext, backend: Backend | None = None) -> bytes:
    b = backend or get_backend("cpu")
    data = np.ascontiguousarray(b.to_numpy(ct.data))
    h = hashlib.sha256(b"gpubfv-ct-digest")
    h.update(ct.params.fingerprint)
    h.update(np.array(data.shape, dtype=np.int64).tobytes())
    h.update(data.tobytes())
    return h.digest()


def c1_digest(ct: Ciphertext, backend: Backend | None = None) -> bytes:
    """Digest of the part a key-switching share depends on: c1 (with parameters and level).

    CKS and PCKS shares are functions of c1 alone, so the never-a-second-share rule is keyed by
    it, and peers that only received c1 of an aggregate compute shares for the same digest.
    """
    b = backend or get_backend("cpu")
    c1 = np.ascontiguousarray(b.to_numpy(ct.data[..., 1, :, :]))
    h = hashlib.sha256(b"gpubfv-c1-digest")
    h.update(ct.params.fingerprint)
    h.update(np.array(c1.shape, dtype=np.int64).tobytes())
    h.update(c1.tobytes())
    return h.digest()


def seed_digest(seed: bytes, label: str) -> bytes:
    return hashlib.sha256(b"gpubfv-crp" + label.encode() + bytes(seed)).digest()


@dataclass(eq=False)
class Share:
    """One peer's share (or an aggregate of several peers' shares).

    data: residues, protocol-specific shape ending in (rows, N); `basis` says which primes the
    rows use ("q" at `level`, or "qp").
    """

    protocol: str
    params: Parameters
    digest: bytes  # what the share is for: CRP seed digest or ciphertext digest
    senders: frozenset[int]
    data: Any
    level: int
    basis: str = "q"
    active_set: frozenset[int] = field(default_factory=frozenset)
    round: int = 1

    def check_compatible(self, other: Share) -> None:
        for name in ("protocol", "digest", "level", "basis", "active_set", "round"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ShareMismatch(f"shares differ in {name}: {a!r} vs {b!r}")
        if self.params.fingerprint != other.params.fingerprint:
            raise ShareMismatch("shares differ in parameters (fingerprint)")
        if self.data.shape != other.data.shape:
            raise ShareMismatch(f"shares differ in shape: {self.data.shape} vs {other.data.shape}")
        overlap = self.senders & other.senders
        if overlap:
            raise ShareMismatch(f"share of peer(s) {sorted(overlap)} counted twice")
