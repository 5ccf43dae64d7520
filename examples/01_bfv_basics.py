"""Example 1: BFV basics — parameters, keys, encoding, encryption, add, multiply, rotate, decrypt.

Run: python examples/01_bfv_basics.py

BFV computes exactly on integers modulo a plaintext modulus t. With batching (t = 1 mod 2N) a
plaintext holds N integers ("slots"), arranged as a 2 x N/2 matrix; additions and
multiplications act slot by slot, rotations move the slots within each row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpubfv import (  # noqa: E402
    BatchEncoder,
    Context,
    Decryptor,
    Encryptor,
    Evaluator,
    KeyGenerator,
    preset,
)


def centered(x: np.ndarray, t: int) -> np.ndarray:
    """Plaintext arithmetic is mod t; results are decoded to the centered range (-t/2, t/2]."""
    r = np.asarray(x, dtype=object) % t
    return np.where(r > t // 2, r - t, r).astype(np.int64)


def main() -> None:
    """Run the ten steps, asserting every decrypted result against plaintext arithmetic."""
    start = time.perf_counter()

    # 1. Parameters. A named, 128-bit secure set: N = 8192 slots, Q = six 30-bit primes,
    #    one 30-bit special prime P for key switching, a 20-bit batching prime t.
    params = preset("PN13")
    print("1. parameters:", params.describe())
    print(f"   fingerprint {params.fingerprint.hex()}  (every serialized object carries it)")
    n, t = params.n, params.t
    #    The Context binds the parameters to a backend ("cpu", "cuda", "auto") and holds every
    #    precomputed table; each scheme object below takes it.
    ctx = Context(params, "cpu")

    # 2. Keys. KeyGenerator draws from a ChaCha20 CSPRNG seeded by os.urandom.
    t0 = time.perf_counter()
    keygen = KeyGenerator(ctx)
    secret_key = keygen.gen_secret_key()
    public_key = keygen.gen_public_key(secret_key)
    relin_key = keygen.gen_relin_key(secret_key)  # for multiplication
    galois_keys = keygen.gen_galois_keys(secret_key, steps=[1, -1])  # rotations by +-1, swap
    print(
        f"2. keys: secret, public, relinearization, Galois {sorted(galois_keys.keys)} "
        f"({time.perf_counter() - t0:.2f} s)"
    )

    encoder = BatchEncoder(ctx)
    encryptor = Encryptor(ctx, public_key)
    decryptor = Decryptor(ctx, secret_key)
    evaluator = Evaluator(ctx, relin_key, galois_keys)

    # 3. Encode. Integer vectors of N slots; batch dimensions come first: here a batch of 2
    #    plaintexts per operand (any (..., N) shape works, and is one kernel call per step).
    rng = np.random.default_rng(2024)
    x = rng.integers(-1000, 1001, (2, n))
    y = rng.integers(-1000, 1001, (2, n))
    pt_x, pt_y = encoder.encode(x), encoder.encode(y)
    print(f"3. encoded two batches of shape {x.shape} into plaintexts {pt_x.data.shape}")

    # 4. Encrypt (public key).
    ct_x, ct_y = encryptor.encrypt(pt_x), encryptor.encrypt(pt_y)
    print(f"4. encrypted: ciphertext array {ct_x.data.shape} (batch, 2 polys, L limbs, N)")
    print(f"   noise budget of a fresh ciphertext: {decryptor.noise_budget(ct_x):.1f} bits")

    # 5. Add.
    ct_sum = evaluator.add(ct_x, ct_y)
    assert np.array_equal(encoder.decode(decryptor.decrypt(ct_sum)), centered(x + y, t))
    print(f"5. add: correct; noise budget {decryptor.noise_budget(ct_sum):.1f} bits")

    # 6. Multiply, then relinearize the size-3 product back to size 2.
    ct_prod = evaluator.mul(ct_x, ct_y)
    budget3 = decryptor.noise_budget(ct_prod)
    ct_prod = evaluator.relinearize(ct_prod)
    want_prod = centered(x * y, t)
    assert np.array_equal(encoder.decode(decryptor.decrypt(ct_prod)), want_prod)
    print(
        f"6. multiply + relinearize: correct; noise budget {budget3:.1f} -> "
        f"{decryptor.noise_budget(ct_prod):.1f} bits"
    )

    # 7. Multiply by a plaintext and add a plaintext (no relinearization needed).
    ct_aff = evaluator.add_plain(evaluator.mul_plain(ct_x, encoder.encode(y)), pt_x)
    assert np.array_equal(encoder.decode(decryptor.decrypt(ct_aff)), centered(x * y + x, t))
    print(
        f"7. x*y + x with plaintexts: correct; noise budget "
        f"{decryptor.noise_budget(ct_aff):.1f} bits"
    )

    # 8. Rotate: the slots form a 2 x N/2 matrix; rotate_rows(1) shifts each row left by one,
    #    rotate_columns swaps the two rows.
    ct_rot = evaluator.rotate_rows(ct_prod, 1)
    rows = want_prod.reshape(2, 2, n // 2)
    want_rot = np.roll(rows, -1, axis=-1).reshape(2, n)
    assert np.array_equal(encoder.decode(decryptor.decrypt(ct_rot)), want_rot)
    ct_swap = evaluator.rotate_columns(ct_x)
    want_swap = x.reshape(2, 2, n // 2)[:, ::-1].reshape(2, n)
    assert np.array_equal(encoder.decode(decryptor.decrypt(ct_swap)), want_swap)
    print(
        f"8. rotate rows by 1 and swap columns: correct; noise budget "
        f"{decryptor.noise_budget(ct_rot):.1f} bits"
    )

    # 9. Decrypt and look at a few slots; sum the batch homomorphically.
    total = encoder.decode(decryptor.decrypt(evaluator.sum(ct_prod)))
    assert np.array_equal(total, centered(want_prod.sum(axis=0), t))
    print("9. decrypted x*y, first slots:", encoder.decode(decryptor.decrypt(ct_prod))[0, :5])
    print("   plaintext  x*y, first slots:", want_prod[0, :5])

    # 10. Modulus switching: drop primes before sending (smaller ciphertext, same plaintext).
    small = evaluator.mod_switch_to(ct_sum, 2)
    assert np.array_equal(encoder.decode(decryptor.decrypt(small)), centered(x + y, t))
    print(
        f"10. switched to {small.level} of {len(params.q)} primes: "
        f"{small.data.nbytes // 2:,} bytes per ciphertext instead of {ct_sum.data.nbytes // 2:,}"
    )

    print(f"all checks passed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
