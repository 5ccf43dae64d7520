"""Compressed wire forms: rounding of c0 and shares against a Python big-int reference, sums in
Z_2^k, the noise model's bound and width, and an end-to-end smudged decryption through them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpubfv import PRNG, Encryptor, Evaluator, KeyGenerator
from gpubfv.ciphertext import Plaintext
from gpubfv.context import Context
from gpubfv.encoder import CoefficientEncoder, EncodingError
from gpubfv.keys import SecretKey
from gpubfv.mhe import DecryptionShare, c1_digest
from gpubfv.mhe.compressed import (
    ROUND_SLACK,
    CompressedCiphertext,
    CompressedDecryptionShare,
    add_words,
    compress_residues,
    lift_words,
    open_positions,
    word_count,
)
from gpubfv.mhe.noise import (
    NoiseBudgetError,
    check_decryptable,
    compression_bits,
    decryption_margin,
    rounding_bound,
)
from gpubfv.mhe.planner import choose_parameters
from gpubfv.mhe.shares import ShareMismatch
from gpubfv.mhe.smudging import Smudging
from gpubfv.params import Parameters, ParametersLiteral
from gpubfv.serialization import from_bytes, to_bytes

# NTT-friendly 30-bit primes of a real set (any coprime moduli serve the arithmetic)
PRIMES = Parameters(
    ParametersLiteral(log_n=4, q_bits=(30, 30, 29, 28), p_bits=(30,), t_bits=17,
                      allow_insecure=True, name="cmp")
).q  # fmt: skip


def _int(words: np.ndarray, col: int) -> int:
    return sum(int(words[w, col]) << (32 * w) for w in range(words.shape[0]))


def _residues(values: list[int], moduli: tuple[int, ...]) -> np.ndarray:
    return np.array([[v % q for v in values] for q in moduli], dtype=np.uint32)


def _cyclic(a: int, m: int) -> int:
    """|a| in Z_m (the distance of a to 0 modulo m)."""
    a %= m
    return min(a, m - a)


@settings(max_examples=40, deadline=None)
@given(
    limbs=st.integers(1, 4),
    bits=st.sampled_from([1, 7, 31, 32, 33, 50, 64, 65, 97, 128, 200, 300]),
    data=st.data(),
)
def test_compress_is_within_half_a_step_and_lift_is_exact(limbs, bits, data):
    moduli = PRIMES[:limbs]
    big_q = math.prod(moduli)
    xs = data.draw(st.lists(st.integers(0, big_q - 1), min_size=1, max_size=9))
    xs += [0, big_q - 1, big_q // 2]
    y = compress_residues(_residues(xs, moduli), moduli, bits)
    assert y.shape == (word_count(bits), len(xs)) and y.dtype == np.uint32
    for i, x in enumerate(xs):
        yi = _int(y, i)
        assert 0 <= yi < 1 << bits
        # |y Q'/2^k - x| mod Q', exactly: |y Q' - x 2^k| mod Q' 2^k <= (1/2 + slack) Q'
        err = _cyclic(yi * big_q - x * 2**bits, big_q * 2**bits)
        assert err <= (0.5 + ROUND_SLACK) * big_q
    ys = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=9))
    words = np.array([[(v >> (32 * w)) & 0xFFFFFFFF for v in ys] for w in range(word_count(bits))])
    lifted = lift_words(words.astype(np.uint32), moduli, bits)
    for i, v in enumerate(ys):
        want = (2 * v * big_q + 2**bits) // 2 ** (bits + 1) % big_q  # round(v Q'/2^k) mod Q'
        assert [int(r) for r in lifted[:, i]] == [want % q for q in moduli]


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([20, 32, 61, 90]), data=st.data())
def test_compressed_sums_stay_within_one_rounding_per_summand(bits, data):
    moduli = PRIMES[:3]
    big_q = math.prod(moduli)
    parts = data.draw(st.lists(st.integers(0, big_q - 1), min_size=2, max_size=6))
    ys = [compress_residues(_residues([x], moduli), moduli, bits) for x in parts]
    total = ys[0]
    for y in ys[1:]:
        total = add_words(total, y, bits)
    assert _int(total, 0) == sum(_int(y, 0) for y in ys) % 2**bits
    got = int(sum(int(r) * (big_q // q) * pow(big_q // q, -1, q) for r, q in zip(
        lift_words(total, moduli, bits)[:, 0], moduli, strict=True)) % big_q)  # fmt: skip
    bound = len(parts) * (0.5 + ROUND_SLACK) * big_q / 2**bits + 0.5
    assert _cyclic(got - sum(parts), big_q) <= bound


def test_bad_widths_and_shapes_are_refused():
    x = _residues([1, 2], PRIMES[:2])
    for bad in (0, 513, True, 2.0):
        with pytest.raises(ValueError, match="bits"):
            compress_residues(x, PRIMES[:2], bad)
    with pytest.raises(ValueError, match="limbs"):
        compress_residues(x, PRIMES[:3], 40)
    with pytest.raises(ValueError, match="words"):
        lift_words(np.zeros((1, 2), np.uint32), PRIMES[:2], 40)


# ---- the noise model ------------------------------------------------------------------------
def _plan():
    return choose_parameters(3, 8, smudging=Smudging(4))


def test_compression_bits_is_the_smallest_width_that_keeps_the_margin():
    plan = _plan()
    p, noise, k = plan.params, plan.wire_noise, plan.peers
    bits = compression_bits(p, noise, k, plan.smudging)
    margin = decryption_margin(p, noise, k, plan.smudging)
    q_wire = p.q_at(plan.level)
    assert rounding_bound(q_wire, bits, k, k) < margin <= rounding_bound(q_wire, bits - 1, k, k)
    # about log2 t + log2(2K) + a bit: the compressed forms keep the message, not the noise
    assert p.t.bit_length() < bits < p.t.bit_length() + math.log2(2 * k) + 8
    assert bits < sum(q.bit_length() for q in p.q[: plan.level]) - 40
    assert check_decryptable(p, noise, k, plan.smudging, rounding=plan.rounding_bound) > 0
    with pytest.raises(NoiseBudgetError, match="rounding"):
        check_decryptable(
            p, noise, k, plan.smudging, rounding=rounding_bound(q_wire, bits - 1, k, k)
        )
    with pytest.raises(ValueError):
        check_decryptable(p, noise, k, plan.smudging, rounding=float("nan"))
    # more roundings need more bits
    assert compression_bits(p, noise, k, plan.smudging, c0_roundings=64, share_roundings=64) > bits


# ---- end to end -----------------------------------------------------------------------------
def _compressed_round(plan, bits: int) -> tuple[list[int], list[int]]:
    """K peers: compressed c0 of each encryption and compressed smudged shares, summed in
    Z_2^bits, lifted once each by the owner, decrypted."""
    p, k = plan.params, plan.peers
    ctx = Context(p, "cpu")
    sks = [KeyGenerator(ctx, prng=PRNG(bytes([i + 1]) * 32)).gen_secret_key() for i in range(k)]
    sk_ideal = SecretKey(p, ctx.qp.sum(np.stack([s.data for s in sks])))
    pk = KeyGenerator(ctx, prng=PRNG(b"\x31" * 32)).gen_public_key(sk_ideal)
    enc = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    values = np.random.default_rng(7).integers(0, 1 << plan.value_bits, (k, enc.slots))
    ev = Evaluator(ctx)
    total = None
    for i in range(k):
        ct = Encryptor(ctx, pk, prng=PRNG(bytes([i + 40]) * 32)).encrypt(enc.encode(values[i]))
        small = CompressedCiphertext.compress(ev.mod_switch_to(ct, plan.level), bits)
        total = small if total is None else total.add(small)
    assert total is not None
    wire = from_bytes(p, to_bytes(total), CompressedCiphertext)
    c1 = wire.c1_ciphertext()
    qb = ctx.q_basis(plan.level)
    agg = None
    for i, sk in enumerate(sks):
        h = qb.intt(qb.mul(qb.ntt(c1.data[1].copy()), sk.q_part(plan.level)), inplace=True)
        qb.add(h, plan.smudging.sample(PRNG(bytes([i + 60]) * 32), qb, (), plan.sigma), out=h)
        share = DecryptionShare(
            params=p, digest=c1_digest(c1), senders=frozenset({i}), data=h, level=plan.level
        )
        small = CompressedDecryptionShare.compress(share, bits)
        small = from_bytes(p, to_bytes(small), CompressedDecryptionShare)
        agg = small if agg is None else agg.combine(small)
    assert agg is not None and agg.senders == frozenset(range(k))
    with pytest.raises(ShareMismatch, match="twice"):
        agg.combine(small)
    lifted = agg.lift()
    phase = qb.add(wire.lift().data[0], lifted.data)
    out = enc.decode(Plaintext(p, ctx.decrypt_scaler(plan.level)(phase)))
    # the same decryption on coefficient positions, in a shuffled order and in two slices
    perm = np.random.default_rng(3).permutation(p.n)
    sub = np.empty((enc.pack, p.n), dtype=np.int64)
    for part in np.array_split(perm, [p.n // 3]):
        coeffs = open_positions(ctx, plan.level, bits, wire.c0[:, part], agg.data[:, part])
        sub[:, part] = enc.unpack_positions(coeffs)
    sliced = [int(v) for v in sub.reshape(-1)]
    assert sliced == [int(v) for v in out]
    return [int(v) for v in out], [int(v) for v in values.sum(axis=0)]


def test_compressed_round_decrypts_exactly_and_too_few_bits_do_not():
    """...and a decryption of coefficient positions (open_positions) gives the same bits as
    the whole ciphertext's, in both cases."""
    plan = _plan()
    got, want = _compressed_round(plan, plan.compressed_bits)
    assert got == want
    # not vacuous: 6 bits fewer than the derived width breaks the sum
    got, want = _compressed_round(plan, plan.compressed_bits - 6)
    assert got != want


def test_open_positions_and_unpack_positions_refuse_bad_shapes():
    plan = _plan()
    ctx = Context(plan.params, "cpu")
    bits, w = plan.compressed_bits, word_count(plan.compressed_bits)
    words = np.zeros((w, 5), dtype=np.uint32)
    with pytest.raises(ValueError, match="words"):
        open_positions(ctx, plan.level, bits, words, words[:, :4])
    with pytest.raises(ValueError, match="words"):
        open_positions(ctx, plan.level, bits, words[:1], words[:1])
    enc = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    with pytest.raises(EncodingError):
        enc.unpack_positions(np.zeros((2, 3), dtype=np.uint64))


@pytest.mark.parametrize("bits", [13, 32, 59, 67, 130])
def test_kernel_and_array_paths_agree(bits):
    """The numba kernels (CPU) and the array expressions (the path CuPy arrays take) give the
    same words and the same lifts."""
    moduli = PRIMES
    rng = np.random.default_rng(bits)  # test data only
    x = np.stack([rng.integers(0, q, size=(3, 64)) for q in moduli], -2).astype(np.uint32)
    y = compress_residues(x, moduli, bits)
    y_arr = compress_residues(x, moduli, bits, array_path=True)
    # the float fraction sum may round a tie differently: at most one step apart
    assert np.count_nonzero(np.any(y != y_arr, axis=-2)) <= 1
    words = np.stack(
        [rng.integers(0, 1 << w, size=(3, 64)) for w in (32,) * (word_count(bits) - 1)]
        + [rng.integers(0, 1 << (bits - 32 * (word_count(bits) - 1)), size=(3, 64))],
        -2,
    ).astype(np.uint32)
    assert np.array_equal(
        lift_words(words, moduli, bits), lift_words(words, moduli, bits, array_path=True)
    )
