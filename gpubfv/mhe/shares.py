"""Protocol shares: one frozen type per protocol step, bound to what they belong to.

Every share carries the parameters, the digest of what it was computed for (a CRP seed or the
c1 rows of a ciphertext batch), its senders and (for threshold runs) the active set. The type
says the protocol and the basis, so a CKG share handed to CKS is a `TypeError`, and combining
shares that differ in any field raises `ShareMismatch` naming the field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gpubfv.backend import Backend
from gpubfv.ciphertext import Ciphertext
from gpubfv.params import Parameters


class ShareMismatch(ValueError):
    """Shares that do not belong together were combined, or an aggregate is incomplete."""


class ShareReplay(RuntimeError):
    """A second share for the same c1 row or CRP digit was requested from one key share."""


def _host(a: Any) -> np.ndarray:
    return np.ascontiguousarray(Backend.for_array(a).to_numpy(a))


def c1_row_digests(ct: Ciphertext) -> list[bytes]:
    """Digest of every ciphertext row's c1 (with parameter fingerprint and level), C order.

    A key-switching share row is a function of one c1 row alone, so the never-a-second-share
    rule is keyed per row: batching, reordering or slicing cannot make a row look new.
    """
    c1 = _host(ct.data[..., 1, :, :]).reshape(-1, ct.level, ct.params.n)
    head = b"gpubfv-c1-row" + ct.params.fingerprint + ct.level.to_bytes(1, "little")
    return [hashlib.sha256(head + row.tobytes()).digest() for row in c1]


def batch_digest(rows: list[bytes], batch_shape: tuple[int, ...]) -> bytes:
    """What a batch share is for: its batch shape and the ordered digests of its rows."""
    h = hashlib.sha256(b"gpubfv-c1-batch")
    h.update(np.array(batch_shape, dtype=np.int64).tobytes())
    for r in rows:
        h.update(r)
    return h.digest()


def c1_digest(ct: Ciphertext) -> bytes:
    """The digest a key-switching share of `ct` (the whole batch, in order) is bound to."""
    return batch_digest(c1_row_digests(ct), tuple(ct.batch_shape))


def seed_digest(seed: bytes, label: str) -> bytes:
    """Digest of a CRP: its public seed and domain label."""
    return hashlib.sha256(b"gpubfv-crp" + label.encode() + bytes(seed)).digest()


@dataclass(frozen=True, kw_only=True, eq=False)
class ProtocolShare:
    """The common base: one peer's share, or an aggregate of several peers' shares.

    `data` holds residues whose trailing axes are (rows, N); the basis is fixed by the type
    (`over_qp`) and, for ciphertext shares, by `level`.
    """

    over_qp: ClassVar[bool] = False

    params: Parameters
    digest: bytes
    senders: frozenset[int]
    data: Any
    active_set: frozenset[int] = field(default_factory=frozenset)

    def _fields(self) -> tuple[str, ...]:
        return ("digest", "active_set")

    def check_compatible(self, other: ProtocolShare) -> None:
        """Raise `TypeError`/`ShareMismatch` unless `other` can be summed with this share."""
        if type(other) is not type(self):
            raise TypeError(f"a {type(other).__name__} cannot combine with a {type(self).__name__}")
        if self.params.fingerprint != other.params.fingerprint:
            raise ShareMismatch("shares differ in parameters (fingerprint)")
        for name in self._fields():
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ShareMismatch(f"shares differ in {name}: {a!r} vs {b!r}")
        if self.data.shape != other.data.shape:
            raise ShareMismatch(f"shares differ in shape: {self.data.shape} vs {other.data.shape}")
        overlap = self.senders & other.senders
        if overlap:
            raise ShareMismatch(f"share of peer(s) {sorted(overlap)} counted twice")


@dataclass(frozen=True, kw_only=True, eq=False)
class PublicKeyShare(ProtocolShare):
    """CKG: -a*s_i + e_i, (L, N) over Q, NTT domain; digest = the CRP's."""


@dataclass(frozen=True, kw_only=True, eq=False)
class GaloisKeyShare(ProtocolShare):
    """GKG for Galois element `galois`: (D, L+K, N) over QP, NTT domain."""

    over_qp: ClassVar[bool] = True
    galois: int

    def _fields(self) -> tuple[str, ...]:
        return ("digest", "galois", "active_set")


@dataclass(frozen=True, kw_only=True, eq=False)
class RelinKeyShareRound1(ProtocolShare):
    """RKG round 1: (D, 2, L+K, N) over QP, NTT domain; digest = the CRP's."""

    over_qp: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, eq=False)
class RelinKeyShareRound2(ProtocolShare):
    """RKG round 2: (D, 2, L+K, N) over QP, NTT domain; digest = the round-1 aggregate's CRP."""

    over_qp: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, eq=False)
class _CiphertextShare(ProtocolShare):
    level: int

    def _fields(self) -> tuple[str, ...]:
        return ("digest", "level", "active_set")


@dataclass(frozen=True, kw_only=True, eq=False)
class DecryptionShare(_CiphertextShare):
    """CKS to the zero key: s_i*c1 + e_smudge, (*batch, level, N) over Q, coefficient domain."""


@dataclass(frozen=True, kw_only=True, eq=False)
class KeySwitchShare(_CiphertextShare):
    """CKS to s' = sum s'_i: (s_i - s'_i)*c1 + e_smudge, (*batch, level, N) over Q."""


@dataclass(frozen=True, kw_only=True, eq=False)
class PublicKeySwitchShare(_CiphertextShare):
    """PCKS: (s_i*c1 + u_i*pk0 + e_smudge, u_i*pk1 + e), (*batch, 2, level, N) over Q."""


SHARE_TYPES: tuple[type[ProtocolShare], ...] = (
    PublicKeyShare,
    GaloisKeyShare,
    RelinKeyShareRound1,
    RelinKeyShareRound2,
    DecryptionShare,
    KeySwitchShare,
    PublicKeySwitchShare,
)
