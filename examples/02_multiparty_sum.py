"""Multiparty sum: K peers, one collective key, nobody can decrypt alone.

1. The planner picks (N, Q, t) and the packing for K peers summing 16-bit values, for smudging
   of the default notion (statistical distance <= 2^-40) over a declared budget of D decryptions.
2. Collective public key (CKG): each peer sends one share -a*s_i + e_i; pk encrypts under sum s_i.
3. Each peer encodes its vector (several values per coefficient), encrypts under pk, and
   modulus-switches to the wire level Q' before sending.
4. Anyone sums the K ciphertexts.
5. Collective decryption: each peer (a `Party`: key share, CSPRNG, journal, id) sends a decryption
   share smudged with noise derived from the ciphertext's noise bound; the combined shares of all
   K peers reveal the sum, and only the sum.

Usage: python examples/02_multiparty_sum.py [--peers 4] [--values N] [--decryptions D]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from gpubfv import (
    PRNG,
    CoefficientEncoder,
    Encryptor,
    Evaluator,
    KeyGenerator,
    get_backend,
)
from gpubfv.context import Context
from gpubfv.mhe import (
    CollectiveDecrypt,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    ShareJournal,
    Smudging,
    choose_parameters,
)
from gpubfv.serialization import nbytes

VALUE_BITS = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument(
        "--values", type=int, default=0, help="values per peer (default: 4 full ciphertexts)"
    )
    ap.add_argument(
        "--decryptions",
        type=int,
        default=100,
        help="declared decryption budget D: ciphertext rows the key shares may ever decrypt",
    )
    args = ap.parse_args()
    k, count = args.peers, args.values
    clock: dict[str, float] = {}

    # 1. parameters from the noise bound, not hand-picked. The smudging spec states the notion
    # (default "statistical": statistical distance <= 2^-lambda over the whole budget), lambda
    # and the budget D the bound holds for; the wire modulus grows with log2(D).
    plan = choose_parameters(k, VALUE_BITS, smudging=Smudging(args.decryptions))
    params = plan.params
    print("plan:", plan.describe())
    print("parameters:", params.describe())

    ctx = Context(params, get_backend("cpu"))

    # every peer is a Party: its own CSPRNG, secret share and persistent share journal (an
    # append-only file beside the key share: never two shares for one c1 row, even after a restart)
    run_dir = tempfile.mkdtemp(prefix="gpubfv-example-02-")
    rngs = [PRNG() for _ in range(k)]
    parties = [
        Party(
            ctx,
            KeyGenerator(ctx, prng=rngs[i]).gen_secret_key(),
            peer_id=i,
            journal=ShareJournal.open(f"{run_dir}/peer{i}.journal"),
            prng=rngs[i],
        )
        for i in range(k)
    ]

    # 2. CKG: the CRP seed is public (agreed by all peers); only shares travel
    t0 = time.perf_counter()
    ckg = PublicKeyGen(ctx, peers=k)
    crp = ckg.sample_crp(b"example-02 public seed".ljust(32, b"\0"))
    key_shares = [party.public_key_share(ckg, crp) for party in parties]
    pk = ckg.finalize(ckg.aggregate(key_shares), crp)  # refuses unless all k peers are in
    clock["collective key"] = time.perf_counter() - t0

    # 3. each peer encrypts signed 16-bit values, offset to [0, 2^16) and packed
    encoder = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    per_ct = encoder.slots
    count = count or 4 * per_ct
    batch = -(-count // per_ct)
    if batch > plan.smudging.budget:
        ap.error(f"{count} values need {batch} decryptions, above --decryptions {args.decryptions}")
    offset = 1 << (VALUE_BITS - 1)
    data = np.random.default_rng(2).integers(-offset, offset, (k, count))
    evaluator = Evaluator(ctx)
    t0 = time.perf_counter()
    sent = []
    for i in range(k):
        padded = np.zeros((batch, per_ct), dtype=np.int64)
        padded.reshape(-1)[:count] = data[i] + offset
        ct = Encryptor(ctx, pk, prng=rngs[i]).encrypt(encoder.encode(padded))
        sent.append(evaluator.mod_switch_to(ct, plan.level))
    clock["encrypt + switch (all peers)"] = time.perf_counter() - t0
    wire_bytes = nbytes(sent[0])

    # 4. the sum (any peer, or an untrusted aggregator)
    t0 = time.perf_counter()
    total = evaluator.sum(sent)
    clock["sum of K ciphertexts"] = time.perf_counter() - t0

    # 5. collective decryption: smudging width derived from the noise of the K-fold sum
    noise = NoiseEstimate.fresh(params, k).mod_switch(params, plan.level, k).summed(k)
    # the plan's smudging spec; its budget D is what each party's journal counts rows against
    cd = CollectiveDecrypt(ctx, noise, peers=k, smudging=plan.smudging)
    print(plan.smudging.describe(cd.sigma_smudge, noise.std, params.n))
    t0 = time.perf_counter()
    dec_shares = [party.decryption_share(cd, total) for party in parties]
    clock["decryption shares (all peers)"] = time.perf_counter() - t0
    share_bytes = nbytes(dec_shares[0])
    t0 = time.perf_counter()
    plain = cd.decrypt(total, cd.aggregate(dec_shares))  # all k peers, or it refuses
    got = encoder.decode(plain).reshape(-1)[:count] - k * offset
    clock["combine + decode"] = time.perf_counter() - t0

    assert np.array_equal(got, data.sum(0)), "collective sum differs from the plaintext sum"
    print(f"{k} peers x {count} values of {VALUE_BITS} bits: sum exact")
    print(
        f"wire: ciphertext {wire_bytes / count:.2f} B/value (plan {plan.bytes_per_value:.2f} at "
        f"full batches), decryption share {share_bytes / count:.2f} B/value"
    )
    for step, sec in clock.items():
        print(f"  {step:32s} {sec * 1e3:8.1f} ms")
    for party in parties:
        party.journal.release()  # the round is over: keep only what the shares were for
        party.journal.close()


if __name__ == "__main__":
    main()
