"""Key set-up of the encrypted aggregator (DESIGN §5, once per run): every peer's secret key
share, a common CRP seed that no peer alone chooses, the collective public key (CKG) summed
with an all-reduce over coefficient chunks, and with t < K the Shamir shares
(:mod:`dmhe.aggregators.encrypted_threshold`). The keys are then persisted when the run keeps
them (:mod:`dmhe.aggregators.encrypted_keys`)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np

from dmhe.aggregators.encrypted_keys import persist_keys
from dmhe.collectives import Codec, Topology, all_gather_bytes, all_reduce
from dmhe.transport import Transport
from gpubfv import KeyGenerator
from gpubfv.mhe import Party, PublicKeyGen

if TYPE_CHECKING:
    from dmhe.aggregators.encrypted import EncryptedAggregator

__all__ = ["collective_key_setup", "common_seed", "sum_residues"]


def common_seed(transport: Transport, topology: Topology) -> bytes:
    """Hash of every peer's random contribution: no peer alone chooses the CRP."""
    contributions = all_gather_bytes(transport, os.urandom(32), topology)
    return hashlib.sha256(b"dmhe-crp" + b"".join(contributions)).digest()


def sum_residues(
    transport: Transport, a: np.ndarray, moduli: list[int] | tuple[int, ...], topology: Topology
) -> np.ndarray:
    """Sum an (L, N) residue array over all peers, mod each prime, by coefficient chunks."""
    k = transport.world_size
    q = np.array(moduli, dtype=np.uint64)[:, None]
    cols = np.array_split(np.arange(a.shape[-1]), k)
    widths = [len(c) for c in cols]
    codec: Codec[np.ndarray] = Codec(
        encode=lambda x: np.ascontiguousarray(x).astype("<u4").tobytes(),
        decode=lambda b, i: np.frombuffer(b, "<u4").reshape(len(moduli), widths[i]).copy(),
        combine=lambda x, y: ((x.astype(np.uint64) + y) % q).astype(np.uint32),
    )
    chunks = [np.ascontiguousarray(a[:, c]) for c in cols]
    return np.concatenate(all_reduce(transport, chunks, codec, topology), axis=-1)


def collective_key_setup(agg: EncryptedAggregator, transport: Transport) -> None:
    """Run the set-up for this peer of ``agg`` (whose PRNG and topology are chosen): its key
    share and journal, the set-up id (a hash of the common seed, the same on every peer), the
    collective public key, the Shamir shares if t < K; then persist the keys."""
    sk = KeyGenerator(agg.ctx, agg._prng).gen_secret_key()
    seed = common_seed(transport, agg.topology)
    agg.setup_id = hashlib.sha256(b"dmhe-setup-id" + seed).hexdigest()[:32]
    agg._journal = agg.open_journal(transport.rank, "additive")
    agg._party = Party(agg.ctx, sk, peer_id=transport.rank, journal=agg._journal, prng=agg._prng)
    ckg = PublicKeyGen(agg.ctx, peers=agg.k)
    crp = ckg.sample_crp(seed)
    share = agg._party.public_key_share(ckg, crp)
    total = sum_residues(transport, agg.backend.to_numpy(share.data), agg.params.q, agg.topology)
    summed = dataclasses.replace(
        share, senders=frozenset(range(agg.k)), data=agg.backend.asarray(total)
    )
    agg._pk = ckg.finalize(summed, crp)
    if agg.uses_threshold:
        from dmhe.aggregators.encrypted_threshold import ThresholdDecryption

        agg._threshold = ThresholdDecryption(agg, transport)
    persist_keys(agg, transport)
