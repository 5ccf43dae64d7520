"""t-out-of-K threshold keys: the sum is decrypted although peers are lost before decryption.

Five peers hold Shamir shares of a collective key with threshold 3. Every peer encrypts its
update; after the ciphertexts are summed, two peers disappear. The first three live peers fix
the active set, turn their threshold shares into additive shares for it (Lagrange weights per
RNS limb) by becoming threshold `Party` objects, produce one smudged decryption share each, and
the combined shares give the exact sum. With only two live peers the round is refused: the
active set is too small, and a decryptor given two shares refuses them. Each peer's journal is
bound to its long-term threshold share, so a second active set cannot re-share the same c1.

The second part is the same in training (dmhe): with ``drop_prob`` every peer is lost in a
round with that probability (drawn from the run seed); a round with at least t live peers
finishes with them, and the metrics say who contributed and how many retries it took.

Run: ``python examples/04_threshold_dropout.py``
"""

from __future__ import annotations

import tempfile

import numpy as np

from gpubfv import BatchEncoder, Encryptor, Evaluator, KeyGenerator, get_backend, preset
from gpubfv.context import Context
from gpubfv.mhe import (
    CollectiveDecrypt,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    ShareJournal,
    ShareMismatch,
    ShareReplay,
    Smudging,
    ThresholdError,
    Thresholdizer,
)


def main(peers: int = 5, threshold: int = 3, lost: tuple[int, ...] = (2, 4)) -> None:
    params = preset("TOY8")  # tiny insecure set: the example shows the protocol, not the speed
    ctx = Context(params, get_backend("cpu"))
    run_dir = tempfile.mkdtemp(prefix="gpubfv-example-04-")
    points = list(range(1, peers + 1))  # peer at point x_j (Shamir evaluation points)
    journals = {x: ShareJournal.open(f"{run_dir}/peer{x}.journal") for x in points}
    sks = [KeyGenerator(ctx).gen_secret_key() for _ in points]

    # set-up with everyone present: collective public key, then Shamir shares of every s_i
    setup = [Party(ctx, sk, peer_id=x, journal=ShareJournal.open(f"{run_dir}/setup{x}.journal"))
             for sk, x in zip(sks, points)]  # fmt: skip
    ckg = PublicKeyGen(ctx, peers=points)
    crp = ckg.sample_crp(b"example-04 public seed".ljust(32, b"\0"))
    pk = ckg.finalize(ckg.aggregate([p.public_key_share(ckg, crp) for p in setup]), crp)
    th = Thresholdizer(ctx, threshold, points)
    dealt = [th.gen_shares(sk, sender=x) for sk, x in zip(sks, points)]  # private channels
    tsks = {x: th.aggregate([d[j] for d in dealt], x) for j, x in enumerate(points)}

    # one round: every peer encrypts its update, anyone sums
    enc = BatchEncoder(ctx)
    bound = params.t // (2 * peers)
    values = np.random.default_rng(0).integers(-bound, bound + 1, (peers, params.n))
    total = Evaluator(ctx).sum(
        [Encryptor(ctx, pk).encrypt(enc.encode(v)) for v in values]
    )  # fmt: skip
    noise = NoiseEstimate.fresh(params, peers).summed(peers)
    # TOY8 is far too small for the default statistical notion (2^-40 statistical distance):
    # the opt-in renyi notion (search problems only, see SECURITY.md), over D = 10 decryptions
    smudging = Smudging(10, notion="renyi", lam=40)
    cd = CollectiveDecrypt(ctx, noise, peers=points, smudging=smudging)

    # two peers are lost; the active set (the first t live peers) is fixed before any share
    live = [x for x in points if x not in lost]
    active = live[:threshold]
    parties = [Party.threshold(ctx, tsks[x], th, active, journal=journals[x]) for x in active]
    agg = cd.aggregate([p.decryption_share(cd, total) for p in parties])
    got = enc.decode(cd.decrypt(total, agg))  # the expected set is the active set in the shares
    assert np.array_equal(got, values.sum(axis=0))
    print(f"peers {sorted(lost)} lost; active set {active}: exact sum of all {peers} updates")

    # peer 2 comes back and another active set is proposed for the same ciphertext: peer 3
    # already shared it under the first set, and its journal refuses a second share
    other = sorted([lost[0], *active[1:]])
    again = Party.threshold(ctx, tsks[active[1]], th, other, journal=journals[active[1]])
    try:
        again.decryption_share(cd, total)
    except ShareReplay:
        print(f"active set {other} for the same ciphertext: refused (never a second share)")
    else:  # pragma: no cover - would be a journal bug
        raise AssertionError("a second share for the same c1 was produced")

    # below t: no additive shares, and a short aggregate does not decrypt
    too_few = live[: threshold - 1]
    try:
        th.additive_share(tsks[too_few[0]], too_few)
    except ThresholdError as exc:
        print(f"with only {len(too_few)} live peers: {exc}")
    else:  # pragma: no cover
        raise AssertionError("fewer than t peers must not decrypt")
    try:
        cd.decrypt(total, cd.aggregate([p.decryption_share(cd, total) for p in parties[:-1]]))
    except ShareMismatch as exc:
        print(f"decrypting from {threshold - 1} of the {threshold} shares: {exc}")
    else:  # pragma: no cover
        raise AssertionError("a short aggregate must be refused")
    for j in journals.values():
        j.close()


def training_with_dropouts(rounds: int = 2) -> None:
    """5 peers, 3-of-5 keys, each peer lost in a round with probability 0.2 (seed 3 loses
    peers 0 and 2 in the first two rounds): the rounds finish with the live peers."""
    from dmhe.trainer import TrainConfig, Trainer

    cfg = TrainConfig(dataset="synthetic", synthetic_shape=(1, 6, 6), synthetic_size=(160, 40),
                      peers=5, rounds=rounds, mode="encrypted", threshold=3, drop_prob=0.2,
                      seed=3)  # fmt: skip
    for m in Trainer(cfg).train():
        print(f"round {m['round']}: contributors {m['contributors']}, retries {m['retries']}")
        assert len(m["contributors"]) >= 3


if __name__ == "__main__":
    main()
    training_with_dropouts()
