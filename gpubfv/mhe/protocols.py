"""Multiparty BFV protocols (Mouchet et al., PETS'21): local steps only, no networking.

A protocol object holds the public configuration (the `Context`, the expected peers, for key
switching the noise estimate, smudging setting and decryption budget) and does `sample_crp`,
`aggregate` and the finaliser. Shares are made by a `gpubfv.mhe.party.Party` (key share,
CSPRNG, journal, id): `party.public_key_share(ckg, crp)`, `party.decryption_share(cd, ct)`, ...
Every finaliser checks that the aggregate holds exactly the expected peers.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpubfv.ciphertext import Ciphertext, Plaintext, check_ciphertext
from gpubfv.context import Context, require_context
from gpubfv.keys import (
    PublicKey,
    SwitchingKey,
    crp_public_key,
    crp_switching,
    gadget_add,
    switching_key_body,
)
from gpubfv.mhe.noise import NoiseEstimate, check_decryptable
from gpubfv.mhe.shares import (
    DecryptionShare,
    GaloisKeyShare,
    KeySwitchShare,
    ProtocolShare,
    PublicKeyShare,
    PublicKeySwitchShare,
    RelinKeyShareRound1,
    RelinKeyShareRound2,
    ShareMismatch,
    batch_digest,
    c1_row_digests,
    seed_digest,
)
from gpubfv.mhe.smudging import Smudging
from gpubfv.ring.sampling import PRNG


@dataclass(frozen=True, eq=False)
class CRP:
    """A common reference polynomial (vector): public, expanded from `seed` under `label`."""

    seed: bytes
    label: str
    data: Any

    @property
    def digest(self) -> bytes:
        """The seed digest every share for this CRP is bound to."""
        return seed_digest(self.seed, self.label)

    def digit_keys(self, digits: int) -> list[bytes]:
        """Journal keys: one per gadget digit of this CRP."""
        return [hashlib.sha256(self.digest + struct.pack("<I", j)).digest() for j in range(digits)]


def peer_set(peers: int | Iterable[int]) -> frozenset[int]:
    """`K` means peers 0..K-1; an iterable names the ids. Empty or negative ids raise."""
    ids = frozenset(range(peers)) if isinstance(peers, int) else frozenset(int(p) for p in peers)
    if not ids or min(ids) < 0:
        raise ValueError(f"peers must be a positive count or non-negative ids, not {peers!r}")
    return ids


class _Protocol:
    """Shared shape: ctx, the expected peers, `aggregate` of this protocol's share types."""

    share_types: tuple[type[ProtocolShare], ...] = ()

    def __init__(self, ctx: Context, *, peers: int | Iterable[int]) -> None:
        ctx = require_context(ctx, type(self).__name__)
        self.ctx = ctx
        self.params = ctx.params
        self.backend = ctx.backend
        self.peers = peer_set(peers)

    def _basis(self, share: ProtocolShare) -> Any:
        if share.over_qp:
            return self.ctx.qp
        return self.ctx.q_basis(getattr(share, "level", None))

    def aggregate(self, shares: Sequence[ProtocolShare]) -> ProtocolShare:
        """Sum shares of distinct peers (all checked to belong together) into one share."""
        if not shares:
            raise ValueError("no shares to aggregate")
        first = shares[0]
        if type(first) not in self.share_types:
            raise TypeError(f"{type(self).__name__} does not combine a {type(first).__name__}")
        basis = self._basis(first)
        acc = first.data.copy()
        senders = set(first.senders)
        for sh in shares[1:]:
            replace(first, senders=frozenset(senders)).check_compatible(sh)
            basis.add(acc, sh.data, out=acc)
            senders |= sh.senders
        return replace(first, senders=frozenset(senders), data=acc)

    def _check_complete(
        self, agg: ProtocolShare, kind: type | tuple[type, ...], peers: Iterable[int] | None
    ) -> None:
        if not isinstance(agg, kind) or type(agg) not in self.share_types:
            raise TypeError(f"{type(self).__name__} cannot finalise a {type(agg).__name__}")
        if agg.params.fingerprint != self.params.fingerprint:
            raise ShareMismatch("aggregate belongs to other parameters")
        want = frozenset(peers) if peers is not None else (agg.active_set or self.peers)
        if agg.senders != want:
            missing, extra = sorted(want - agg.senders), sorted(agg.senders - want)
            raise ShareMismatch(
                f"aggregate holds shares of {len(agg.senders)} peers, expected {len(want)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )


def _same_crp(agg: ProtocolShare, crp: CRP) -> None:
    if agg.digest != crp.digest:
        raise ShareMismatch("aggregate belongs to another CRP")


# ---- collective public key (CKG) -------------------------------------------------------------
class PublicKeyGen(_Protocol):
    """CKG: p_i = -a*s_i + e_i; pk = (sum p_i, a) encrypts under s = sum s_i."""

    share_types = (PublicKeyShare,)

    def sample_crp(self, seed: bytes) -> CRP:
        """The CRS polynomial a from a public 32-byte seed."""
        return CRP(bytes(seed), "pk", crp_public_key(self.ctx, seed))

    def _make(self, sk: Any, crp: CRP, rng: PRNG, peer: int, active: frozenset[int]) -> Any:
        if crp.label != "pk":
            raise ShareMismatch(f"CRP {crp.label!r} is not a public-key CRP")
        qb = self.ctx.q_basis()
        e = qb.ntt(qb.from_signed(rng.cbd((self.ctx.n,))), inplace=True)
        h = qb.sub(e, qb.mul(crp.data, sk.q_part(self.ctx.L)))
        return PublicKeyShare(
            params=self.params, digest=crp.digest, senders=frozenset({peer}), data=h,
            active_set=active,
        )  # fmt: skip

    def finalize(
        self, agg: PublicKeyShare, crp: CRP, *, peers: Iterable[int] | None = None
    ) -> PublicKey:
        """The collective public key from the aggregate of every expected peer's share."""
        self._check_complete(agg, PublicKeyShare, peers)
        _same_crp(agg, crp)
        return PublicKey(self.params, self.backend.xp.stack([agg.data, crp.data]), crp.seed)


# ---- collective Galois keys (GKG) --------------------------------------------------------------
class GaloisKeyGen(_Protocol):
    """GKG: -a_j*s_i + e + gadget_j(sigma_g(s_i)) per digit, for one Galois element g."""

    share_types = (GaloisKeyShare,)

    def sample_crp(self, seed: bytes, galois: int) -> CRP:
        """The a_j of the Galois key for `galois` from a public seed."""
        label = f"galois/{galois}"
        return CRP(bytes(seed), label, crp_switching(self.ctx, seed, label))

    def _make(
        self, sk: Any, crp: CRP, galois: int, rng: PRNG, peer: int, active: frozenset[int]
    ) -> GaloisKeyShare:
        if crp.label != f"galois/{galois}":
            raise ShareMismatch(f"CRP {crp.label!r} is not for Galois element {galois}")
        qp = self.ctx.qp
        s_g = qp.ntt(qp.automorphism(qp.intt(sk.data), galois), inplace=True)
        body = switching_key_body(self.ctx, sk.data, s_g, crp.data, rng)
        return GaloisKeyShare(
            params=self.params, digest=crp.digest, senders=frozenset({peer}), data=body,
            active_set=active, galois=int(galois),
        )  # fmt: skip

    def finalize(
        self, agg: GaloisKeyShare, crp: CRP, *, peers: Iterable[int] | None = None
    ) -> SwitchingKey:
        """The collective Galois key for `agg.galois`."""
        self._check_complete(agg, GaloisKeyShare, peers)
        _same_crp(agg, crp)
        data = self.backend.xp.stack([agg.data, crp.data], axis=1)
        return SwitchingKey(self.params, data, crp.seed, agg.galois, crp.label)


# ---- collective relinearization key (RKG, two rounds) -----------------------------------------
@dataclass(frozen=True, eq=False)
class RKGEphemeral:
    """A peer's ephemeral u_i between the two RKG rounds: secret, never sent, never stored."""

    u: Any  # NTT domain over QP
    digest: bytes  # the round-1 CRP it belongs to


class RelinKeyGen(_Protocol):
    """RKG in two rounds; the result relinearizes degree-2 ciphertexts under s = sum s_i."""

    share_types = (RelinKeyShareRound1, RelinKeyShareRound2)

    def sample_crp(self, seed: bytes) -> CRP:
        """The a_j of the relinearization key from a public seed."""
        return CRP(bytes(seed), "rkg", crp_switching(self.ctx, seed, "rkg"))

    def _make_round1(
        self, sk: Any, crp: CRP, rng: PRNG, peer: int, active: frozenset[int]
    ) -> tuple[RKGEphemeral, RelinKeyShareRound1]:
        """(-u_i a_j + s_i w_j + e, s_i a_j + e) per digit j."""
        if crp.label != "rkg":
            raise ShareMismatch(f"CRP {crp.label!r} is not a relinearization-key CRP")
        ctx, qp = self.ctx, self.ctx.qp
        u = qp.ntt(qp.from_signed(rng.ternary((ctx.n,))), inplace=True)
        h0 = switching_key_body(ctx, u, None, crp.data, rng, with_gadget=False)
        gadget_add(ctx, h0, sk.data)
        # h1 = a*s - e: the sign of the error is irrelevant (symmetric distribution)
        h1 = qp.neg(switching_key_body(ctx, sk.data, None, crp.data, rng, with_gadget=False))
        data = self.backend.xp.stack([h0, h1], axis=1)
        share = RelinKeyShareRound1(
            params=self.params, digest=crp.digest, senders=frozenset({peer}), data=data,
            active_set=active,
        )  # fmt: skip
        return RKGEphemeral(u, crp.digest), share

    def _make_round2(
        self,
        sk: Any,
        eph: RKGEphemeral,
        agg1: RelinKeyShareRound1,
        rng: PRNG,
        peer: int,
        active: frozenset[int],
    ) -> RelinKeyShareRound2:
        """(s_i * h0_j + e, (u_i - s_i) * h1_j + e) per digit j, from the round-1 aggregate."""
        if type(agg1) is not RelinKeyShareRound1:
            raise TypeError(
                f"round 2 needs the aggregate of RKG round 1, not {type(agg1).__name__}"
            )
        if eph.digest != agg1.digest:
            raise ShareMismatch("ephemeral and round-1 aggregate belong to different CRPs")
        ctx, qp = self.ctx, self.ctx.qp
        h0, h1 = agg1.data[:, 0], agg1.data[:, 1]
        e = qp.ntt(qp.from_signed(rng.cbd((2, len(ctx.digits), ctx.n))), inplace=True)
        r0 = qp.add(qp.mul(h0, sk.data), e[0])
        r1 = qp.add(qp.mul(h1, qp.sub(eph.u, sk.data)), e[1])
        return RelinKeyShareRound2(
            params=self.params, digest=agg1.digest, senders=frozenset({peer}),
            data=self.backend.xp.stack([r0, r1], axis=1), active_set=active,
        )  # fmt: skip

    def finalize(
        self,
        agg1: RelinKeyShareRound1,
        agg2: RelinKeyShareRound2,
        *,
        peers: Iterable[int] | None = None,
    ) -> SwitchingKey:
        """The relinearization key from both rounds' aggregates (same peers in both)."""
        self._check_complete(agg1, RelinKeyShareRound1, peers)
        self._check_complete(agg2, RelinKeyShareRound2, peers)
        if agg1.digest != agg2.digest:
            raise ShareMismatch("round-2 aggregate does not belong to this round-1 aggregate")
        if agg1.senders != agg2.senders:
            raise ShareMismatch("rounds 1 and 2 were produced by different peers")
        qp = self.ctx.qp
        b = qp.add(agg2.data[:, 0], agg2.data[:, 1])
        data = self.backend.xp.stack([b, agg1.data[:, 1]], axis=1)
        return SwitchingKey(self.params, data, None, 0, "rkg")


# ---- key switching family: CKS to 0, CKS to a key, PCKS ----------------------------------------
class _SmudgedSwitch(_Protocol):
    """Shared constructor: smudging width from the ciphertext's noise estimate and the smudging
    setting (the ONE place it is used), the declared decryption budget D; parameters that
    cannot decrypt the smudged result raise `NoiseBudgetError`."""

    kind = ""

    def __init__(
        self,
        ctx: Context,
        noise: NoiseEstimate,
        *,
        peers: int | Iterable[int],
        smudging: Smudging,
    ) -> None:
        super().__init__(ctx, peers=peers)
        if not isinstance(smudging, Smudging):
            raise TypeError(
                "smudging must be a gpubfv.mhe.Smudging (notion, lam and the decryption budget D), "
                f"not {smudging!r}"
            )
        self.noise, self.smudging = noise, smudging
        self.sigma_smudge = check_decryptable(ctx.params, noise, len(self.peers), smudging)

    @property
    def budget(self) -> int:
        """The declared decryption budget D (ciphertext rows per key share) of the smudging."""
        return self.smudging.budget

    def _check_ct(self, ct: Ciphertext) -> None:
        check_ciphertext(self.params, ct, size=2)
        if ct.level != self.noise.level:
            raise ValueError(
                f"ciphertext at level {ct.level}, noise estimate for level {self.noise.level}"
            )

    def _tag(self, target: bytes, active: frozenset[int]) -> bytes:
        """Everything besides c1 a key-switch share row depends on (hashed, never sent)."""
        h = hashlib.sha256(b"gpubfv-ks-request/" + self.kind.encode())
        h.update(struct.pack("<dq", self.sigma_smudge, len(self.peers)))
        h.update(self.smudging.tag() + repr(sorted(active)).encode() + target)
        return h.digest()

    def _rows(self, ct: Ciphertext, idx: list[int]) -> Any:
        """c1 of the selected rows, NTT domain: (len(idx), level, N)."""
        c1 = ct.data[..., 1, :, :].reshape(-1, ct.level, self.ctx.n)
        qb = self.ctx.q_basis(ct.level)
        if idx == list(range(c1.shape[0])):  # every row is new (the usual case): no gather
            return qb.ntt(c1)
        return qb.ntt(c1[self.backend.xp.asarray(idx, dtype="int64")])

    def _assemble(self, ct: Ciphertext, rows: list[Any], tail: tuple[int, ...]) -> Any:
        xp = self.backend.xp
        if not rows:
            return xp.zeros(tuple(ct.batch_shape) + tail, dtype=xp.uint32)
        return xp.stack(rows).reshape(tuple(ct.batch_shape) + tail)

    def _smudged(self, h: Any, level: int, rng: PRNG) -> Any:
        qb = self.ctx.q_basis(level)
        qb.intt(h, inplace=True)
        sm = self.smudging.sample(rng, qb, tuple(h.shape[:-2]), self.sigma_smudge)
        return qb.add(h, sm, out=h)

    def _opened(self, ct: Ciphertext, agg: ProtocolShare, kind: type, peers: Any) -> Any:
        self._check_complete(agg, kind, peers)
        if agg.digest != batch_digest(c1_row_digests(ct), tuple(ct.batch_shape)):
            raise ShareMismatch("aggregate belongs to another ciphertext (c1 differs)")
        return self.ctx.q_basis(ct.level)


class CollectiveDecrypt(_SmudgedSwitch):
    """CKS to the zero key: the combined shares of every expected peer give the plaintext."""

    kind = "cks"
    share_types = (DecryptionShare,)

    def _make_rows(self, key: Any, ct: Ciphertext, idx: list[int], rng: PRNG) -> list[Any]:
        qb = self.ctx.q_basis(ct.level)
        h = qb.mul(self._rows(ct, idx), key.q_part(ct.level))
        return list(self._smudged(h, ct.level, rng))

    def decrypt(
        self, ct: Ciphertext, agg: DecryptionShare, *, peers: Iterable[int] | None = None
    ) -> Plaintext:
        """The plaintext of `ct` from the aggregate of every expected peer's share.

        round(t (c0 + sum_i h_i) / Q) mod t by the level's `ScaleRoundToT`: uint64 coefficients,
        or for a wide t = 2^k the exact multi-word rounding (uint32 words (..., W, N))."""
        qb = self._opened(ct, agg, DecryptionShare, peers)
        phase = qb.add(ct.data[..., 0, :, :], agg.data)
        return Plaintext(self.params, self.ctx.decrypt_scaler(ct.level)(phase))


class KeySwitch(_SmudgedSwitch):
    """CKS from s = sum s_i to s' = sum s'_i; each peer holds s_i and s'_i."""

    kind = "cks-to-key"
    share_types = (KeySwitchShare,)

    def _make_rows(
        self, key: Any, target: Any, ct: Ciphertext, idx: list[int], rng: PRNG
    ) -> list[Any]:
        qb = self.ctx.q_basis(ct.level)
        diff = qb.sub(key.q_part(ct.level), target.q_part(ct.level))
        return list(self._smudged(qb.mul(self._rows(ct, idx), diff), ct.level, rng))

    def finalize(
        self, ct: Ciphertext, agg: KeySwitchShare, *, peers: Iterable[int] | None = None
    ) -> Ciphertext:
        """`ct` under the target key s'."""
        qb = self._opened(ct, agg, KeySwitchShare, peers)
        out = ct.data.copy()
        out[..., 0, :, :] = qb.add(ct.data[..., 0, :, :], agg.data)
        return Ciphertext(self.params, out)


class PublicKeySwitch(_SmudgedSwitch):
    """PCKS: re-encrypt under a receiver's public key; only the receiver can decrypt."""

    kind = "pcks"
    share_types = (PublicKeySwitchShare,)

    def _make_rows(
        self, key: Any, pk_out: PublicKey, ct: Ciphertext, idx: list[int], rng: PRNG
    ) -> list[Any]:
        level, n, m = ct.level, self.ctx.n, len(idx)
        qb = self.ctx.q_basis(level)
        u = qb.ntt(qb.from_signed(rng.ternary((m, n))), inplace=True)
        h0 = qb.mul(self._rows(ct, idx), key.q_part(level))
        qb.mul_add(u, pk_out.data[0][:level], h0)
        h1 = qb.mul(u, pk_out.data[1][:level])
        h0 = self._smudged(h0, level, rng)
        qb.intt(h1, inplace=True)
        qb.add(h1, qb.from_signed(rng.cbd((m, n))), out=h1)
        return list(self.backend.xp.stack([h0, h1], axis=1))

    def finalize(
        self, ct: Ciphertext, agg: PublicKeySwitchShare, *, peers: Iterable[int] | None = None
    ) -> Ciphertext:
        """`ct` re-encrypted under the receiver's public key."""
        qb = self._opened(ct, agg, PublicKeySwitchShare, peers)
        out = self.backend.xp.empty_like(ct.data)
        out[..., 0, :, :] = qb.add(ct.data[..., 0, :, :], agg.data[..., 0, :, :])
        out[..., 1, :, :] = agg.data[..., 1, :, :]
        return Ciphertext(self.params, out)
