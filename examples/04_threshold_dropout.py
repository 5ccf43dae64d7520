"""t-out-of-K threshold keys: the sum is decrypted although peers are lost before decryption.

Five peers hold Shamir shares of a collective key with threshold 3. Each round every peer
encrypts its update; after the ciphertexts are summed, two peers disappear. The first three live
peers turn their threshold shares into additive shares for that fixed active set (Lagrange
weights per RNS limb), produce one smudged decryption share each, and every surviving peer ends
with the exact sum. Two peers would not be enough: the round would be discarded and redone from
fresh ciphertexts (never a second share for the same ciphertext).

Run: ``python examples/04_threshold_dropout.py``
"""

from __future__ import annotations

import numpy as np

from dmhe.encrypted import EncryptedAggregator
from dmhe.transport import PeerDropped, run_peers


def main(peers: int = 5, threshold: int = 3, lost: tuple[int, ...] = (1, 3)) -> None:
    rng = np.random.default_rng(0)
    aggs = [EncryptedAggregator(peers, threshold=threshold) for _ in range(peers)]
    print(aggs[0].describe())
    values = rng.integers(-aggs[0].offset, aggs[0].offset + 1, (peers, 50_000))

    def peer(t):
        agg = aggs[t.rank]
        agg.setup(t)  # collective public key + Shamir shares of every peer's key share
        agg.drop_before_decrypt = frozenset(lost)  # simulate the loss after the ciphertext phase
        return agg.allreduce_sum(t, values[t.rank])

    results = run_peers(peers, peer)
    for rank, res in enumerate(results):
        if isinstance(res, PeerDropped):
            print(f"peer {rank}: lost before decryption")
        else:
            assert np.array_equal(res, values.sum(axis=0))
            print(f"peer {rank}: exact sum of all {peers} updates")

    too_many = tuple(range(peers - threshold + 1))
    for a in aggs:
        a.drop_before_decrypt = frozenset()

    def peer_again(t):
        agg = aggs[t.rank]
        agg.drop_before_decrypt = frozenset(too_many)
        return agg.allreduce_sum(t, values[t.rank])

    try:
        run_peers(peers, peer_again)
    except PeerDropped as exc:
        print(f"with {len(too_many)} peers lost: {exc}")
    else:  # pragma: no cover - would be a protocol bug
        raise AssertionError("fewer than t peers must not decrypt")


if __name__ == "__main__":
    main()
