"""Threshold decryption for :class:`~dmhe.aggregators.encrypted.EncryptedAggregator` (t < K).

At set-up every peer Shamir-shares its key share s_i to every other (point = rank + 1) and
keeps F(x_rank) = sum_i f_i(x_rank). In a round, after the ciphertext phase, the live set is
agreed by a liveness exchange (a peer lost before decryption is noticed by all alike), the
active set A (the first t live peers) is fixed before any share, members of A make one share
per chunk with their Lagrange-weighted key share, the shares are summed along a sub-ring over
A, each member opens its chunks, and the plaintexts are all-gathered over A and forwarded to the
live peers outside A. A member of A lost after that point aborts the round (``PeerDropped``):
the trainer retries with fresh ciphertexts, so no peer ever makes a second share for the same c1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dmhe.collectives import Codec, all_gather, reduce_scatter
from dmhe.framing import frame, unframe
from dmhe.transport import PeerDropped, SubRing, Transport, original_rank
from gpubfv.mhe import Party, ShamirShare, Thresholdizer
from gpubfv.serialization import from_bytes, to_bytes

if TYPE_CHECKING:
    from dmhe.aggregators.encrypted import EncryptedAggregator
    from gpubfv.mhe.compressed import CompressedCiphertext

__all__ = ["SubRing", "ThresholdDecryption"]


def _list_codec(item: Codec[Any], members: list[list[int]]) -> Codec[list[Any]]:
    """A list of items per group as one framed message; ``members[g]`` are group g's indices."""

    def combine(a: list[Any], b: list[Any]) -> list[Any]:
        assert item.combine is not None
        return [item.combine(x, y) for x, y in zip(a, b, strict=True)]

    return Codec(
        encode=lambda items: frame([item.encode(x) for x in items]),
        decode=lambda buf, g: [
            item.decode(b, i)
            for i, b in zip(members[g], unframe(buf, len(members[g])), strict=True)
        ],
        combine=combine if item.combine is not None else None,
    )


class ThresholdDecryption:
    """The t-of-K key material of one peer and the round's decryption over the active set."""

    def __init__(self, agg: EncryptedAggregator, transport: Transport) -> None:
        """Shamir-share this peer's key share: point-to-point, once per run, (K-1) ring
        elements over QP per peer. The shares are secret: a deployment sends them over
        authenticated, encrypted channels (TLS)."""
        assert agg.threshold is not None
        self.agg = agg
        k, rank = agg.k, transport.rank
        th = Thresholdizer(agg.ctx, agg.threshold, [p + 1 for p in range(k)])
        assert agg._party is not None
        mine = th.gen_shares(agg._party.key_share, rank, agg._prng)
        for p in range(k):
            if p != rank:
                transport.send(p, to_bytes(mine[p]))
        received = [mine[rank]]
        for p in range(k):
            if p != rank:
                sh = from_bytes(agg.ctx, transport.recv(p), ShamirShare)
                if sh.sender != p or sh.point != rank + 1:
                    raise ValueError(f"peer {p} sent a Shamir share for the wrong point")
                received.append(sh)
        self.thresholdizer = th
        self.key = th.aggregate(received, rank + 1)
        # the threshold share is another key share: its own journal, bound to it on first use
        self.journal = agg.open_journal(rank, "threshold")

    @classmethod
    def restored(
        cls, agg: EncryptedAggregator, th: Thresholdizer, key: Any, transport: Transport
    ) -> ThresholdDecryption:
        """The key material of a restarted peer (dmhe.aggregators.encrypted_keys): its
        persisted Shamir share and the SAME journal file as before (no exchange)."""
        self = cls.__new__(cls)
        self.agg, self.thresholdizer, self.key = agg, th, key
        self.journal = agg.open_journal(transport.rank, "threshold")
        return self

    def active_set(self, transport: Transport) -> tuple[list[int], list[int]]:
        """``(live peers, active set A)``, agreed by every live peer alike."""
        agg = self.agg
        if original_rank(transport) in agg.drop_before_decrypt:
            transport.leave()  # simulated loss of this peer before decryption
        with agg._phase("communicate"):
            live = transport.live_peers()
        t = agg.threshold
        assert t is not None
        if len(live) < t:
            raise PeerDropped(
                min(set(range(transport.world_size)) - set(live)),
                f"only {len(live)} live peers, threshold {t}: round discarded",
            )
        return live, live[:t]

    def decrypt(
        self, transport: Transport, aggs: list[CompressedCiphertext], sizes: list[int]
    ) -> list[np.ndarray]:
        """The K opened chunks (packed sub-slots), on every live peer, from the gathered
        compressed chunks (c0 rounded, c1 full: every member of A can open any chunk)."""
        agg, rank = self.agg, transport.rank
        live, active = self.active_set(transport)
        t = len(active)
        n_chunks = len(aggs)  # one per contributing peer (fewer than K after a loss)
        groups = [[int(i) for i in g] for g in np.array_split(np.arange(n_chunks), t)]
        sums_codec = _list_codec(agg.sums_codec(sizes), groups)
        outside = [p for p in live if p not in active]
        if rank not in active:
            server = active[outside.index(rank) % t]
            with agg._phase("communicate"):
                buf = transport.recv(server)
            everything = _list_codec(agg.sums_codec(sizes), [list(range(n_chunks))])
            return everything.decode(buf, 0)
        # Shamir points are the original ranks + 1, also when ``transport`` is a sub-ring
        ranks = transport.members if isinstance(transport, SubRing) else list(range(agg.k))
        points = [ranks[p] + 1 for p in active]
        with agg._phase("decrypt"):
            party = Party.threshold(
                agg.ctx, self.key, self.thresholdizer, points, journal=self.journal, prng=agg._prng
            )
            shares = agg.decryption_shares(aggs, party)
        sub = SubRing(transport, active)
        sub_topology = agg.topology_for(len(active), 0)
        with agg._phase("communicate"):
            share_codec = _list_codec(agg.share_codec(), groups)
            g_idx, g_agg = reduce_scatter(
                sub, [[shares[i] for i in g] for g in groups], share_codec, sub_topology
            )
        with agg._phase("decrypt"):
            opened = [agg.open_chunk(aggs[i], a) for i, a in zip(groups[g_idx], g_agg, strict=True)]
        with agg._phase("communicate"):
            gathered = all_gather(sub, g_idx, opened, sums_codec, sub_topology)
            sums: list[Any] = [None] * n_chunks
            for g, items in zip(groups, gathered, strict=True):
                for i, arr in zip(g, items, strict=True):
                    sums[i] = arr
            # forward the result to the live peers outside A (each member serves a share of them)
            payload = frame([agg.sums_codec(sizes).encode(s) for s in sums])
            pos = active.index(rank)
            for j, p in enumerate(outside):
                if j % t == pos:
                    transport.send(p, payload)
        return sums
