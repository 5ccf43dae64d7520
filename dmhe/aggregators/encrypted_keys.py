"""Persisted key material of the encrypted aggregator: saved after set-up, reloaded on a restart.

With the aggregator option ``key_dir`` (the trainer passes the process peer's own ``rank-N/``
folder), :func:`persist_keys` writes the additive key share, the collective public key and, with
a threshold, the Shamir share to ``key_dir/keys.bin`` (see
:mod:`dmhe.aggregators.encrypted_keystore`: 0600, atomic, digest) right after set-up, and the
share journals live beside it under names fixed by the set-up id. :func:`restore_keys` runs
instead of a new set-up when that file exists: it loads the keys, reopens the SAME journals
(every recorded row is refused, the decryption budget D keeps counting) and checks with every
peer that all hold the same set-up id and collective-key fingerprint, else a
:class:`~dmhe.config.ConfigError` (exit 2) naming the ranks that differ. After a restart with
fewer processes than peers (:mod:`dmhe.restart`) only the live peers take part, and a missing
key file is refused: a new set-up would need all K, and a persisted identity never gets a fresh
key share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from dmhe.aggregators.encrypted_keystore import (
    KEYS,
    KeyMaterial,
    KeysForOtherParameters,
    load_keys,
    save_keys,
)
from dmhe.collectives import all_gather_bytes
from dmhe.config import ConfigError
from dmhe.transport import SubRing, Transport
from gpubfv.mhe import Party, Thresholdizer

if TYPE_CHECKING:
    from dmhe.aggregators.encrypted import EncryptedAggregator

__all__ = ["persist_keys", "restore_keys"]


def persist_keys(agg: EncryptedAggregator, transport: Transport) -> None:
    """Write this peer's key material to ``key_dir`` (nothing without that option)."""
    folder = agg.options["key_dir"]
    if folder is None:
        return
    assert agg._party is not None and agg.setup_id is not None
    th = agg._threshold
    save_keys(
        folder,
        KeyMaterial(
            rank=transport.rank,
            setup_id=agg.setup_id,
            secret_key=agg._party.key_share,
            public_key=agg._pk,
            threshold_share=None if th is None else th.key,
            threshold=None if th is None else agg.threshold,
            points=None if th is None else tuple(th.thresholdizer.points),
        ),
    )


def restore_keys(agg: EncryptedAggregator, transport: Transport) -> bool:
    """Load the persisted keys instead of a set-up; False (every peer alike) when no peer has
    any, or when all were made for other parameters (a resume that declares another budget D:
    a new set-up then replaces them, with new journals; the old key share is never used again).
    """
    folder = agg.options["key_dir"]
    if folder is None:
        return False
    keys = None
    try:
        if (Path(folder) / KEYS).exists():
            keys = load_keys(folder, agg.ctx, transport.rank)
            if keys.threshold != agg.threshold:
                raise ConfigError(
                    f"persisted keys have threshold {keys.threshold}, the run {agg.threshold}"
                )
        state = "none" if keys is None else json.dumps([keys.setup_id, keys.public_key_fingerprint])
    except KeysForOtherParameters:
        state = "other"
    except ConfigError as exc:
        state = "error " + str(exc)
    # a restart with fewer processes than peers (dmhe.restart): only the live ones answer
    live = transport.reachable_peers()
    ring, topology = transport, agg.topology
    if len(live) < transport.world_size:
        ring, topology = SubRing(transport, live), agg.topology_for(len(live), 0)
    everyone = [b.decode() for b in all_gather_bytes(ring, state.encode(), topology)]
    bad = [live[r] for r, s in enumerate(everyone) if s.startswith("error ")]
    if bad:
        raise ConfigError(f"rank {bad[0]}: {everyone[live.index(bad[0])][6:]}")
    if all(s in ("none", "other") for s in everyone):
        if ring is not transport:  # a new set-up needs every peer; a persisted key share stays
            raise ConfigError(
                f"{len(live)} of {agg.k} peers restarted without their persisted keys (none, or "
                "made for another budget D: resume with the same rounds and max retries)"
            )
        return False
    if len(set(everyone)) != 1 or keys is None:
        odd = [live[r] for r, s in enumerate(everyone) if s != everyone[0]]
        raise ConfigError(
            f"persisted keys differ: ranks {odd} hold none, or another set-up id or collective "
            f"key than rank 0 (do not mix run directories)"
        )
    agg.setup_id = keys.setup_id
    agg._journal = agg.open_journal(transport.rank, "additive")
    agg._party = Party(
        agg.ctx, keys.secret_key, peer_id=transport.rank, journal=agg._journal, prng=agg._prng
    )
    agg._pk = keys.public_key
    if keys.threshold_share is not None:
        from dmhe.aggregators.encrypted_threshold import ThresholdDecryption

        assert keys.threshold is not None and keys.points is not None
        th = Thresholdizer(agg.ctx, keys.threshold, list(keys.points))
        agg._threshold = ThresholdDecryption.restored(agg, th, keys.threshold_share, transport)
    return True
