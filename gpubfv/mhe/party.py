"""Party: what one peer owns in the multiparty protocols (Lattigo's per-party objects).

A `Party` holds a key share, its CSPRNG, its share journal and its id, and is the only thing that
makes shares: ``party.public_key_share(ckg, crp)``, ``party.decryption_share(cd, ct)`` and so on.
Every share request goes through the journal (mandatory: there is no journal-less path), so a
key share never produces two shares for one c1 row or CRP digit, under any batching or restart.
A threshold party's key share is the Lagrange-weighted share for an active set fixed when the
party is built (`Party.threshold`), before any share exists; its shares carry that set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpubfv.backend import Backend
from gpubfv.ciphertext import Ciphertext
from gpubfv.context import Context, require_context
from gpubfv.keys import PublicKey, SecretKey
from gpubfv.mhe.journal import ShareJournal
from gpubfv.mhe.protocols import (
    CRP,
    CollectiveDecrypt,
    GaloisKeyGen,
    KeySwitch,
    PublicKeyGen,
    PublicKeySwitch,
    RelinKeyGen,
    RKGEphemeral,
    _Protocol,
    _SmudgedSwitch,
)
from gpubfv.mhe.shares import (
    DecryptionShare,
    GaloisKeyShare,
    KeySwitchShare,
    PublicKeyShare,
    PublicKeySwitchShare,
    RelinKeyShareRound1,
    RelinKeyShareRound2,
    batch_digest,
    c1_row_digests,
)
from gpubfv.mhe.threshold import Thresholdizer, ThresholdSecretShare
from gpubfv.ring.sampling import PRNG


def _key_digest(data: Any, what: bytes) -> bytes:
    """A keyed digest of secret residues: binds a journal to one key share (never reversible)."""
    raw = np.ascontiguousarray(Backend.for_array(data).to_numpy(data)).tobytes()
    return hashlib.blake2b(raw, key=b"gpubfv-journal/" + what, digest_size=32).digest()


def _public_digest(data: Any) -> bytes:
    raw = np.ascontiguousarray(Backend.for_array(data).to_numpy(data)).tobytes()
    return hashlib.sha256(raw).digest()


class Party:
    """One peer: key share, CSPRNG, share journal and id.

    `Party(ctx, key_share, peer_id=i, journal=ShareJournal.open(path))`; `prng` defaults to a
    fresh OS-seeded ChaCha20 stream. The journal is bound to this key share on first use.
    """

    def __init__(
        self,
        ctx: Context,
        key_share: SecretKey,
        *,
        peer_id: int,
        journal: ShareJournal,
        prng: PRNG | None = None,
        active_set: frozenset[int] = frozenset(),
        _binding: bytes | None = None,
    ) -> None:
        ctx = require_context(ctx, type(self).__name__)
        if not isinstance(journal, ShareJournal):
            raise TypeError(
                "a Party needs a ShareJournal (ShareJournal.open(path); tests may use "
                "ShareJournal.in_memory(unsafe_not_persistent=True)): without one, a retry or "
                "restart could produce a second share and leak the key share"
            )
        if not isinstance(key_share, SecretKey):
            raise TypeError(f"key_share must be a SecretKey, got {type(key_share).__name__}")
        if key_share.params.fingerprint != ctx.params.fingerprint:
            raise ValueError("key share belongs to other parameters than the context")
        if isinstance(peer_id, bool) or not isinstance(peer_id, int) or peer_id < 0:
            raise ValueError(f"peer_id must be a non-negative int, not {peer_id!r}")
        self.ctx = ctx
        self.key_share = key_share
        self.peer_id = peer_id
        self.journal = journal
        self.prng = prng or PRNG(backend=ctx.backend)
        self.active_set = frozenset(int(a) for a in active_set)
        if self.active_set and peer_id not in self.active_set:
            raise ValueError(f"peer {peer_id} is not in its own active set")
        journal.bind(_binding or _key_digest(key_share.data, b"additive"))

    @classmethod
    def threshold(
        cls,
        ctx: Context,
        tsk: ThresholdSecretShare,
        thresholdizer: Thresholdizer,
        active_set: Sequence[int],
        *,
        journal: ShareJournal,
        prng: PRNG | None = None,
    ) -> Party:
        """The party at point `tsk.point` for the fixed `active_set` (exactly t points).

        The journal is bound to the long-term threshold share, not to the additive share, so
        one c1 row never gets two shares even under two different active sets.
        """
        key = thresholdizer.additive_share(tsk, active_set)
        return cls(
            ctx,
            key,
            peer_id=tsk.point,
            journal=journal,
            prng=prng,
            active_set=frozenset(active_set),
            _binding=_key_digest(tsk.data, b"threshold"),
        )

    def _check(self, protocol: _Protocol) -> None:
        if protocol.params.fingerprint != self.ctx.params.fingerprint:
            raise ValueError(f"{type(protocol).__name__} is for other parameters than this party")

    # -- CRP protocols -----------------------------------------------------------------------
    def public_key_share(self, ckg: PublicKeyGen, crp: CRP) -> PublicKeyShare:
        """CKG share -a*s_i + e_i (the recorded one if this CRP was already answered)."""
        self._check(ckg)
        return self.journal.crp_share(
            "ckg",
            crp.digit_keys(1),
            hashlib.sha256(b"ckg").digest(),
            lambda: ckg._make(self.key_share, crp, self.prng, self.peer_id, self.active_set),
        )

    def galois_key_share(self, gkg: GaloisKeyGen, crp: CRP, galois: int) -> GaloisKeyShare:
        """GKG share for Galois element `galois` (one per CRP digit)."""
        self._check(gkg)
        return self.journal.crp_share(
            "gkg",
            crp.digit_keys(len(self.ctx.digits)),
            hashlib.sha256(b"gkg%d" % galois).digest(),
            lambda: gkg._make(
                self.key_share, crp, galois, self.prng, self.peer_id, self.active_set
            ),
        )

    def relin_key_share_round1(
        self, rkg: RelinKeyGen, crp: CRP
    ) -> tuple[RKGEphemeral, RelinKeyShareRound1]:
        """RKG round 1: the ephemeral u_i (keep it, secret) and the round-1 share."""
        self._check(rkg)
        return self.journal.crp_share(
            "rkg1",
            crp.digit_keys(len(self.ctx.digits)),
            hashlib.sha256(b"rkg1").digest(),
            lambda: rkg._make_round1(self.key_share, crp, self.prng, self.peer_id, self.active_set),
        )

    def relin_key_share_round2(
        self, rkg: RelinKeyGen, eph: RKGEphemeral, agg1: RelinKeyShareRound1
    ) -> RelinKeyShareRound2:
        """RKG round 2 from the round-1 aggregate (one per round-1 CRP digit)."""
        self._check(rkg)
        keys = _digit_keys(b"rkg2" + agg1.digest, len(self.ctx.digits))
        return self.journal.crp_share(
            "rkg2",
            keys,
            _public_digest(agg1.data),
            lambda: rkg._make_round2(
                self.key_share, eph, agg1, self.prng, self.peer_id, self.active_set
            ),
        )

    # -- key switching: one journal namespace per c1 row --------------------------------------
    def _switch(
        self, proto: _SmudgedSwitch, ct: Ciphertext, target: bytes, make: Any, tail: tuple
    ) -> tuple[bytes, Any]:
        self._check(proto)
        proto._check_ct(ct)
        rows = c1_row_digests(ct)
        got = self.journal.key_switch(
            rows,
            proto._tag(target, self.active_set),
            proto.budget,
            lambda idx: make(idx, self.prng),
        )
        return batch_digest(rows, tuple(ct.batch_shape)), proto._assemble(ct, got, tail)

    def decryption_share(self, cd: CollectiveDecrypt, ct: Ciphertext) -> DecryptionShare:
        """CKS-to-0 share s_i*c1 + e_smudge of every row of the batch `ct`."""
        digest, data = self._switch(
            cd,
            ct,
            b"",
            lambda idx, rng: cd._make_rows(self.key_share, ct, idx, rng),
            (ct.level, self.ctx.n),
        )
        return DecryptionShare(
            params=self.ctx.params, digest=digest, senders=frozenset({self.peer_id}), data=data,
            active_set=self.active_set, level=ct.level,
        )  # fmt: skip

    def key_switch_share(
        self, ks: KeySwitch, ct: Ciphertext, target_key: SecretKey
    ) -> KeySwitchShare:
        """CKS share (s_i - s'_i)*c1 + e_smudge towards this peer's share s'_i of the new key."""
        digest, data = self._switch(
            ks,
            ct,
            _key_digest(target_key.data, b"target"),
            lambda idx, rng: ks._make_rows(self.key_share, target_key, ct, idx, rng),
            (ct.level, self.ctx.n),
        )
        return KeySwitchShare(
            params=self.ctx.params, digest=digest, senders=frozenset({self.peer_id}), data=data,
            active_set=self.active_set, level=ct.level,
        )  # fmt: skip

    def public_key_switch_share(
        self, pcks: PublicKeySwitch, ct: Ciphertext, pk_out: PublicKey
    ) -> PublicKeySwitchShare:
        """PCKS share (s_i*c1 + u_i*pk0 + e_smudge, u_i*pk1 + e) towards `pk_out`."""
        if pk_out.params.fingerprint != self.ctx.params.fingerprint:
            raise ValueError("receiver's public key belongs to other parameters")
        digest, data = self._switch(
            pcks,
            ct,
            _public_digest(pk_out.data),
            lambda idx, rng: pcks._make_rows(self.key_share, pk_out, ct, idx, rng),
            (2, ct.level, self.ctx.n),
        )
        return PublicKeySwitchShare(
            params=self.ctx.params, digest=digest, senders=frozenset({self.peer_id}), data=data,
            active_set=self.active_set, level=ct.level,
        )  # fmt: skip


def _digit_keys(digest: bytes, digits: int) -> list[bytes]:
    return [hashlib.sha256(digest + j.to_bytes(4, "little")).digest() for j in range(digits)]
