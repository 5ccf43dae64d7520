"""Multiparty BFV protocols (Mouchet et al., PETS'21): local steps only, no networking.

Every protocol has the same shape: `sample_crp(seed)` -> `gen_share(key share, crp | ct, ...)`
-> `aggregate(shares)` -> a finaliser. Shares are `Share` objects bound to their CRP or
ciphertext digest; a `ShareJournal` passed to `gen_share` enforces the never-a-second-share rule.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.ciphertext import Ciphertext, Plaintext
from gpubfv.context import get_context
from gpubfv.encryptor import check_ciphertext
from gpubfv.keys import (
    PublicKey,
    SecretKey,
    SwitchingKey,
    crp_public_key,
    crp_switching,
    gadget_add,
    switching_key_body,
)
from gpubfv.mhe.journal import ShareJournal
from gpubfv.mhe.noise import NoiseEstimate, check_decryptable
from gpubfv.mhe.shares import Share, ShareMismatch, c1_digest, seed_digest
from gpubfv.params import Parameters
from gpubfv.ring.sampling import PRNG


@dataclass(frozen=True, eq=False)
class CRP:
    """A common reference polynomial (vector): public, expanded from `seed`."""

    seed: bytes
    label: str
    data: Any

    @property
    def digest(self) -> bytes:
        return seed_digest(self.seed, self.label)


class _Protocol:
    name = ""

    def __init__(self, params: Parameters, backend: Backend | None = None) -> None:
        self.params = params
        self.backend = backend or get_backend("cpu")
        self.ctx = get_context(params, self.backend)

    def _basis(self, share: Share) -> Any:
        return self.ctx.qp if share.basis == "qp" else self.ctx.q_basis(share.level)

    def aggregate(self, shares: list[Share]) -> Share:
        """Sum shares from distinct peers (all checked to belong together)."""
        if not shares:
            raise ValueError("no shares to aggregate")
        first = shares[0]
        if first.protocol != self.name:
            raise ShareMismatch(f"share of protocol {first.protocol!r} given to {self.name!r}")
        basis = self._basis(first)
        acc = first.data.copy()
        senders = set(first.senders)
        seen = first
        for sh in shares[1:]:
            probe = Share(
                seen.protocol,
                seen.params,
                seen.digest,
                frozenset(senders),
                acc,
                seen.level,
                seen.basis,
                seen.active_set,
                seen.round,
            )
            probe.check_compatible(sh)
            basis.add(acc, sh.data, out=acc)
            senders |= sh.senders
        return Share(
            first.protocol,
            first.params,
            first.digest,
            frozenset(senders),
            acc,
            first.level,
            first.basis,
            first.active_set,
            first.round,
        )

    def _journal(
        self,
        journal: ShareJournal | None,
        digest: bytes,
        request: bytes,
        make: Any,
        round_: int = 1,
    ) -> Any:
        if journal is None:
            return make()
        return journal.record(f"{self.name}/r{round_}", digest, request, make)

    @staticmethod
    def _check_complete(agg: Share, expected: int | None) -> None:
        if expected is not None and len(agg.senders) != expected:
            raise ShareMismatch(
                f"aggregate holds shares of {len(agg.senders)} peers, expected {expected}"
            )


# ---- collective public key (CKG) -------------------------------------------------------------
class PublicKeyGen(_Protocol):
    name = "ckg"

    def sample_crp(self, seed: bytes) -> CRP:
        return CRP(bytes(seed), "pk", crp_public_key(self.ctx, seed))

    def gen_share(
        self,
        sk: SecretKey,
        crp: CRP,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
    ) -> Share:
        def make() -> Share:
            rng = prng or PRNG(backend=self.backend)
            qb = self.ctx.q_basis()
            e = qb.ntt(qb.from_signed(rng.cbd((self.ctx.n,))), inplace=True)
            h = qb.sub(e, qb.mul(crp.data, sk.q_part(self.ctx.L)))
            return Share(self.name, self.params, crp.digest, frozenset({peer}), h, self.ctx.L)

        return self._journal(journal, crp.digest, b"", make)

    def finalize(self, agg: Share, crp: CRP, expected_peers: int | None = None) -> PublicKey:
        if agg.digest != crp.digest:
            raise ShareMismatch("aggregate belongs to another CRP")
        self._check_complete(agg, expected_peers)
        return PublicKey(self.params, self.backend.xp.stack([agg.data, crp.data]), crp.seed)


# ---- collective Galois keys (GKG) --------------------------------------------------------------
class GaloisKeyGen(_Protocol):
    name = "gkg"

    def sample_crp(self, seed: bytes, galois: int) -> CRP:
        label = f"galois/{galois}"
        return CRP(bytes(seed), label, crp_switching(self.ctx, seed, label))

    def gen_share(
        self,
        sk: SecretKey,
        galois: int,
        crp: CRP,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
    ) -> Share:
        if crp.label != f"galois/{galois}":
            raise ShareMismatch(f"CRP {crp.label!r} is not for Galois element {galois}")

        def make() -> Share:
            rng = prng or PRNG(backend=self.backend)
            qp = self.ctx.qp
            s_g = qp.ntt(qp.automorphism(qp.intt(sk.data), galois), inplace=True)
            body = switching_key_body(self.ctx, sk.data, s_g, crp.data, rng)
            return Share(self.name, self.params, crp.digest, frozenset({peer}), body, 0, "qp")

        return self._journal(journal, crp.digest, struct.pack("<q", galois), make)

    def finalize(
        self, agg: Share, crp: CRP, galois: int, expected_peers: int | None = None
    ) -> SwitchingKey:
        if agg.digest != crp.digest:
            raise ShareMismatch("aggregate belongs to another CRP")
        self._check_complete(agg, expected_peers)
        data = self.backend.xp.stack([agg.data, crp.data], axis=1)
        return SwitchingKey(self.params, data, crp.seed, galois, crp.label)


# ---- collective relinearization key (RKG, two rounds) -----------------------------------------
@dataclass(eq=False)
class RKGEphemeral:
    """A peer's ephemeral u_i between the two RKG rounds: secret, never sent."""

    u: Any  # NTT domain over QP


class RelinKeyGen(_Protocol):
    name = "rkg"

    def sample_crp(self, seed: bytes) -> CRP:
        return CRP(bytes(seed), "rkg", crp_switching(self.ctx, seed, "rkg"))

    def gen_share_round1(
        self,
        sk: SecretKey,
        crp: CRP,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
    ) -> tuple[RKGEphemeral, Share]:
        """(-u_i a_j + s_i w_j + e, s_i a_j + e) per digit j."""
        rng = prng or PRNG(backend=self.backend)
        ctx, qp = self.ctx, self.ctx.qp

        def make() -> tuple[RKGEphemeral, Share]:
            u = qp.ntt(qp.from_signed(rng.ternary((ctx.n,))), inplace=True)
            h0 = switching_key_body(ctx, u, None, crp.data, rng, with_gadget=False)
            gadget_add(ctx, h0, sk.data)
            # h1 = a*s - e: the sign of the error is irrelevant (symmetric distribution)
            h1 = qp.neg(switching_key_body(ctx, sk.data, None, crp.data, rng, with_gadget=False))
            data = self.backend.xp.stack([h0, h1], axis=1)
            share = Share(self.name, self.params, crp.digest, frozenset({peer}), data, 0, "qp")
            return RKGEphemeral(u), share

        # the journal keeps the ephemeral with the share, so a retry resumes the same run
        return self._journal(journal, crp.digest, b"", make, 1)

    def gen_share_round2(
        self,
        sk: SecretKey,
        eph: RKGEphemeral,
        agg1: Share,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
    ) -> Share:
        """(s_i * h0_j + e, (u_i - s_i) * h1_j + e) per digit j, from the round-1 aggregate."""
        if agg1.protocol != self.name or agg1.round != 1:
            raise ShareMismatch("round 2 needs the aggregate of RKG round 1")

        def make() -> Share:
            rng = prng or PRNG(backend=self.backend)
            ctx, qp = self.ctx, self.ctx.qp
            D = len(ctx.digits)
            h0 = agg1.data[:, 0]
            h1 = agg1.data[:, 1]
            e = qp.ntt(qp.from_signed(rng.cbd((2, D, ctx.n))), inplace=True)
            r0 = qp.add(qp.mul(h0, sk.data), e[0])
            r1 = qp.add(qp.mul(h1, qp.sub(eph.u, sk.data)), e[1])
            data = self.backend.xp.stack([r0, r1], axis=1)
            return Share(
                self.name, self.params, agg1.digest, frozenset({peer}), data, 0, "qp", round=2
            )

        return self._journal(journal, agg1.digest, b"", make, 2)

    def finalize(self, agg1: Share, agg2: Share, expected_peers: int | None = None) -> SwitchingKey:
        if agg1.digest != agg2.digest or agg2.round != 2:
            raise ShareMismatch("round-2 aggregate does not belong to this round-1 aggregate")
        if agg1.senders != agg2.senders:
            raise ShareMismatch("rounds 1 and 2 were produced by different peers")
        self._check_complete(agg2, expected_peers)
        qp = self.ctx.qp
        b = qp.add(agg2.data[:, 0], agg2.data[:, 1])
        data = self.backend.xp.stack([b, agg1.data[:, 1]], axis=1)
        return SwitchingKey(self.params, data, None, 0, "rkg")


# ---- collective key switching / decryption (CKS) ----------------------------------------------
class _SmudgedSwitch(_Protocol):
    """Shared constructor of CKS and PCKS: the smudging width is derived from the noise estimate
    of the ciphertext and lambda; parameters that cannot decrypt the smudged result raise."""

    def __init__(
        self,
        params: Parameters,
        noise: NoiseEstimate,
        peers: int,
        lam: int = 40,
        backend: Backend | None = None,
    ) -> None:
        super().__init__(params, backend)
        self.noise, self.peers, self.lam = noise, peers, lam
        self.sigma_smudge = check_decryptable(params, noise, peers, lam)


class KeySwitch(_SmudgedSwitch):
    """CKS: switch a ciphertext from s = sum s_i to s' = sum s'_i (s' = 0: decryption).

    The smudging width is derived from the ciphertext's noise estimate and lambda, and the
    constructor refuses parameters that cannot decrypt the smudged result.
    """

    name = "cks"

    def _request(self, extra: bytes = b"") -> bytes:
        return hashlib.sha256(
            struct.pack("<dqq", self.sigma_smudge, self.peers, self.lam) + extra
        ).digest()

    def gen_share(
        self,
        sk_in: SecretKey,
        ct: Ciphertext,
        peer: int,
        sk_out: SecretKey | None = None,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
        active_set: frozenset[int] = frozenset(),
    ) -> Share:
        check_ciphertext(self.params, ct, size=2)
        if ct.level != self.noise.level:
            raise ValueError(
                f"ciphertext at level {ct.level}, noise estimate for level {self.noise.level}"
            )
        digest = c1_digest(ct, self.backend)

        def make() -> Share:
            rng = prng or PRNG(backend=self.backend)
            level = ct.level
            qb = self.ctx.q_basis(level)
            key = sk_in.q_part(level)
            if sk_out is not None:
                key = qb.sub(key, sk_out.q_part(level))
            h = qb.intt(qb.mul(qb.ntt(ct.data[..., 1, :, :]), key), inplace=True)
            sm = rng.gaussian(ct.batch_shape + (self.ctx.n,), self.sigma_smudge)
            qb.add(h, qb.from_signed(sm), out=h)
            return Share(
                self.name,
                self.params,
                digest,
                frozenset({peer}),
                h,
                level,
                active_set=frozenset(active_set),
            )

        # the target key share is part of the request (hashed locally, never sent)
        target = (
            b""
            if sk_out is None
            else hashlib.sha256(
                np.ascontiguousarray(self.backend.to_numpy(sk_out.data)).tobytes()
            ).digest()
        )
        tag = target + repr(sorted(active_set)).encode()
        if ct.data.size == 0:  # an empty batch (e.g. an empty ring chunk): nothing to protect
            return make()
        return self._journal(journal, digest, self._request(tag), make)

    def finalize(self, ct: Ciphertext, agg: Share, expected_peers: int | None = None) -> Ciphertext:
        if agg.digest != c1_digest(ct, self.backend):
            raise ShareMismatch("aggregate belongs to another ciphertext (c1 differs)")
        self._check_complete(agg, expected_peers)
        qb = self.ctx.q_basis(ct.level)
        out = ct.data.copy()
        out[..., 0, :, :] = qb.add(ct.data[..., 0, :, :], agg.data)
        return Ciphertext(self.params, out)


class CollectiveDecrypt(KeySwitch):
    """CKS to the zero key: the combined shares give the plaintext."""

    name = "cks"

    def gen_share(  # type: ignore[override]
        self,
        sk: SecretKey,
        ct: Ciphertext,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
        active_set: frozenset[int] = frozenset(),
    ) -> Share:
        return super().gen_share(sk, ct, peer, None, prng, journal, active_set)

    def decrypt(self, ct: Ciphertext, agg: Share, expected_peers: int | None = None) -> Plaintext:
        if agg.digest != c1_digest(ct, self.backend):
            raise ShareMismatch("aggregate belongs to another ciphertext (c1 differs)")
        self._check_complete(agg, expected_peers)
        qb = self.ctx.q_basis(ct.level)
        phase = qb.add(ct.data[..., 0, :, :], agg.data)
        return Plaintext(self.params, self.ctx.decrypt_scaler(ct.level)(phase))


# ---- public-key switching (PCKS) ---------------------------------------------------------------
class PublicKeySwitch(_SmudgedSwitch):
    """Re-encrypt a ciphertext under a receiver's public key; only the receiver can decrypt."""

    name = "pcks"

    def gen_share(
        self,
        sk: SecretKey,
        pk_out: PublicKey,
        ct: Ciphertext,
        peer: int,
        prng: PRNG | None = None,
        journal: ShareJournal | None = None,
        active_set: frozenset[int] = frozenset(),
    ) -> Share:
        check_ciphertext(self.params, ct, size=2)
        digest = c1_digest(ct, self.backend)
        pk_digest = hashlib.sha256(
            np.ascontiguousarray(self.backend.to_numpy(pk_out.data))
        ).digest()

        def make() -> Share:
            rng = prng or PRNG(backend=self.backend)
            level = ct.level
            qb = self.ctx.q_basis(level)
            n = self.ctx.n
            batch = ct.batch_shape
            u = qb.ntt(qb.from_signed(rng.ternary(batch + (n,))), inplace=True)
            c1 = qb.ntt(ct.data[..., 1, :, :])
            h0 = qb.mul(c1, sk.q_part(level))
            qb.mul_add(u, pk_out.data[0][:level], h0)
            h1 = qb.mul(u, pk_out.data[1][:level])
            qb.intt(h0, inplace=True)
            qb.intt(h1, inplace=True)
            qb.add(h0, qb.from_signed(rng.gaussian(batch + (n,), self.sigma_smudge)), out=h0)
            qb.add(h1, qb.from_signed(rng.cbd(batch + (n,))), out=h1)
            data = self.backend.xp.stack([h0, h1], axis=-3)
            return Share(
                self.name,
                self.params,
                digest,
                frozenset({peer}),
                data,
                level,
                active_set=frozenset(active_set),
            )

        request = hashlib.sha256(
            pk_digest + struct.pack("<d", self.sigma_smudge) + repr(sorted(active_set)).encode()
        ).digest()
        if ct.data.size == 0:
            return make()
        return self._journal(journal, digest, request, make)

    def finalize(self, ct: Ciphertext, agg: Share, expected_peers: int | None = None) -> Ciphertext:
        if agg.digest != c1_digest(ct, self.backend):
            raise ShareMismatch("aggregate belongs to another ciphertext (c1 differs)")
        self._check_complete(agg, expected_peers)
        qb = self.ctx.q_basis(ct.level)
        out = self.backend.xp.empty_like(ct.data)
        out[..., 0, :, :] = qb.add(ct.data[..., 0, :, :], agg.data[..., 0, :, :])
        out[..., 1, :, :] = agg.data[..., 1, :, :]
        return Ciphertext(self.params, out)
