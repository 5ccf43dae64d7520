"""gpubfv.mhe: every collective protocol against the single-key scheme under sk_ideal = sum s_i.

The table runs each protocol over K in {2, 3, 8} peers on the tiny sets (TOY6, TOY8) and over one
realistic set, the one `choose_parameters(3, 8, smudging=Smudging(16))` plans (N = 8192, 128-bit),
with K = 3. The tiny sets cannot hold statistical smudging, so their key switches use the opt-in
`renyi` notion, stated explicitly; the realistic set runs CKS, CKS-to-a-key and PCKS under the
DEFAULT `statistical` notion. Every share is made by a `Party` (key share, CSPRNG, journal, id).
The checks are:
- structure: a collective key has the form of a single key for sk_ideal, with an error no larger
  than the worst case of its protocol (CKG, RKG, GKG);
- function: encrypt under the collective key -> sum -> collective decryption equals the numpy sum
  exactly; relinearized products and rotations under collective keys decrypt like the single-key
  ones; PCKS reaches the receiver only; CKS to a new collective key decrypts under the new one;
- threshold: every t-subset decrypts, t-1 is refused, and a forced t-1 combine is wrong;
- noise: measured noise against `NoiseEstimate`, the smudging derivation and its refusals;
- the typed combine checks and the finalisers' expected peer sets; the parameter planner.
The journal itself (replays, persistence, budget) is tested in tests/test_journal.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import cache

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gpubfv import (
    PRNG,
    BatchEncoder,
    CoefficientEncoder,
    Decryptor,
    Encryptor,
    Evaluator,
    KeyGenerator,
    ParameterError,
    Parameters,
    ParametersLiteral,
    preset,
)
from gpubfv.context import Context
from gpubfv.encoder import EncodingError
from gpubfv.encryptor import invariant_noise_max, phase
from gpubfv.keys import GaloisKeys, SecretKey, gadget_add, galois_element_rows
from gpubfv.mhe import (
    CollectiveDecrypt,
    DecryptionShare,
    GaloisKeyGen,
    KeySwitch,
    NoiseBudgetError,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    PublicKeySwitch,
    RelinKeyGen,
    ShareJournal,
    ShareMismatch,
    ShareReplay,
    Smudging,
    ThresholdError,
    Thresholdizer,
    check_decryptable,
    choose_parameters,
    smudging_sigma,
)
from gpubfv.mhe.noise import tail_factor
from gpubfv.params import PRESETS

ETA = 21  # centered binomial errors: |e| <= 21 (gpubfv.params.ERROR_BOUND)
REALISTIC = "agg-K3-b8-p3"  # realistic_plan().literal: N = 8192, 128-bit secure
BUDGET = 1 << 20  # declared decryptions on the tiny sets: the tests never come near it
REAL_BUDGET = 16  # declared decryptions D on the realistic set (the tests make a few rows)
TOY_SMUDGING = Smudging(BUDGET, notion="renyi", lam=40)  # tiny sets cannot hold "statistical"


@cache
def realistic_plan():
    # the default notion ("statistical", lambda = 40) over D = REAL_BUDGET decryptions
    return choose_parameters(3, 8, smudging=Smudging(REAL_BUDGET))


@cache
def params_named(name: str) -> Parameters:
    if name == REALISTIC:
        return realistic_plan().params
    return preset(name)


def smudging_for(name: str) -> Smudging:
    """The realistic set's plan spec (statistical, the default); renyi on the tiny sets."""
    return realistic_plan().smudging if name == REALISTIC else TOY_SMUDGING


def mem() -> ShareJournal:
    return ShareJournal.in_memory(unsafe_not_persistent=True)


def make_parties(ctx, sks, rngs=None, ids=None) -> list[Party]:
    ids = range(len(sks)) if ids is None else ids
    rngs = [None] * len(sks) if rngs is None else rngs
    return [
        Party(ctx, sk, peer_id=i, journal=mem(), prng=rng) for sk, i, rng in zip(sks, ids, rngs)
    ]


class World:
    """K parties with secret shares s_i, the ideal key, a collective public key and a sum."""

    def __init__(self, name: str, k: int) -> None:
        self.name, self.k = name, k
        self.p = p = params_named(name)
        self.ctx = ctx = Context(p, "cpu")
        self.rngs = [PRNG(bytes([i + 1, k]) * 16) for i in range(k)]
        self.sks = [KeyGenerator(ctx, prng=self.rngs[i]).gen_secret_key() for i in range(k)]
        self.parties = make_parties(ctx, self.sks, self.rngs)
        self.sk_ideal = SecretKey(p, ctx.qp.sum(np.stack([s.data for s in self.sks])))
        self.ckg = PublicKeyGen(ctx, peers=k)
        self.crp = self.ckg.sample_crp(b"\x07" * 32)
        self.ckg_shares = [pa.public_key_share(self.ckg, self.crp) for pa in self.parties]
        self.pk = self.ckg.finalize(self.ckg.aggregate(self.ckg_shares), self.crp)
        self.batching = p.batching
        self.enc = BatchEncoder(ctx) if p.batching else CoefficientEncoder(ctx)
        self.ev = Evaluator(ctx)
        data_rng = np.random.default_rng(1000 * k + p.n)  # test data, not key material
        self.x = data_rng.integers(-100, 101, (k, p.n))
        self.cts = [
            Encryptor(ctx, self.pk, prng=self.rngs[i]).encrypt(self.enc.encode(self.x[i]))
            for i in range(k)
        ]
        self.ct_sum = self.ev.sum(self.cts)
        self.noise_sum = NoiseEstimate.fresh(p, k).summed(k)
        self.smudging = smudging_for(name)
        self.cd = self.decryptor(peers=k)
        self.d_ideal = Decryptor(ctx, self.sk_ideal)

    def decryptor(self, **kw) -> CollectiveDecrypt:
        kw.setdefault("peers", self.k)
        kw.setdefault("smudging", self.smudging)
        return CollectiveDecrypt(self.ctx, kw.pop("noise", self.noise_sum), **kw)

    def collective_decrypt(self, ct, parties=None, cd=None):
        parties = self.parties if parties is None else parties
        cd = self.cd if cd is None else cd
        shares = [pa.decryption_share(cd, ct) for pa in parties]
        return self.enc.decode(cd.decrypt(ct, cd.aggregate(shares)))


@cache
def world(name: str, k: int) -> World:
    return World(name, k)


TABLE = [(s, k) for s in ("TOY6", "TOY8") for k in (2, 3, 8)]
TABLE_R = TABLE + [(REALISTIC, 3)]


def tid(case) -> str:
    name, k = case
    if name == REALISTIC:
        return f"{name}-N={params_named(name).n}-K={k}"
    return f"{name}-K={k}"


def ids(cases) -> list[str]:
    return [tid(c.values[0] if hasattr(c, "values") else c) for c in cases]


# ---- helpers ----------------------------------------------------------------------------------
def centered(x: np.ndarray, moduli) -> np.ndarray:
    """Residues (..., len(moduli), N) of SMALL values -> centered int64 per limb."""
    q = np.array(moduli, dtype=np.int64)[:, None]
    v = x.astype(np.int64)
    return np.where(v > q // 2, v - q, v)


def crt_centered(x: np.ndarray, moduli) -> np.ndarray:
    """Residues (..., L, N) -> centered integers (Python ints, float64 result) via CRT."""
    big = math.prod(moduli)
    coeffs = [(big // q) * pow(big // q, -1, q) for q in moduli]
    flat = x.reshape(-1, len(moduli), x.shape[-1])
    out = np.empty((flat.shape[0], x.shape[-1]), dtype=np.float64)
    for b, poly in enumerate(flat):
        rows = [[int(v) for v in row] for row in poly]
        for j in range(x.shape[-1]):
            v = sum(rows[i][j] * coeffs[i] for i in range(len(moduli))) % big
            out[b, j] = float(v - big if v > big // 2 else v)
    return out


def limb_consistent(err: np.ndarray, bound: int) -> bool:
    """True if the centered residues of every limb agree (a small value) and stay within bound."""
    return bool(np.all(err == err[..., :1, :]) and np.abs(err).max() <= bound)


def negacyclic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[-1]
    full = np.convolve(a, b)
    out = full[:n].copy()
    out[: n - 1] -= full[n:]
    return out


def automorphism_plain(m: np.ndarray, g: int) -> np.ndarray:
    """Coefficient i of m(X) moves to X^(i*g) mod X^N + 1."""
    n = m.shape[-1]
    out = np.zeros_like(m)
    idx = (np.arange(n) * g) % (2 * n)
    sign = np.where(idx >= n, -1, 1)
    out[idx % n] = sign * m
    return out


def rotate_slots(x: np.ndarray, steps: int) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate([np.roll(x[:h], -steps), np.roll(x[h:], -steps)])


def mod_t(v: np.ndarray, t: int) -> np.ndarray:
    v = np.mod(v, t)
    return np.where(v > t // 2, v - t, v)


# ---- CKG ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_ckg_public_key_is_a_key_for_sk_ideal(case):
    w = world(*case)
    qb = w.ctx.q_basis()
    assert np.array_equal(w.pk.data[1], w.crp.data)  # a is the CRP, unchanged
    # b + a*s_ideal = sum e_i: the same form as a single-key public key, with K errors
    err = qb.intt(qb.add(w.pk.data[0], qb.mul(w.pk.data[1], w.sk_ideal.q_part(w.ctx.L))))
    err = centered(err, w.p.q)
    assert limb_consistent(err, w.k * ETA)
    assert np.abs(err).max() > 0
    # and it encrypts like a single-key public key made from sk_ideal
    pk_single = KeyGenerator(w.ctx, prng=PRNG(b"\x44" * 32)).gen_public_key(w.sk_ideal)
    ct = Encryptor(w.ctx, pk_single, prng=PRNG(b"\x45" * 32)).encrypt(w.enc.encode(w.x[0]))
    assert np.array_equal(w.enc.decode(w.d_ideal.decrypt(ct)), w.x[0])
    assert np.array_equal(w.enc.decode(w.d_ideal.decrypt(w.cts[0])), w.x[0])


@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_sum_then_collective_decrypt_equals_numpy(case):
    w = world(*case)
    want = w.x.sum(0)
    assert np.array_equal(w.enc.decode(w.d_ideal.decrypt(w.ct_sum)), want)  # single key
    assert np.array_equal(w.collective_decrypt(w.ct_sum), want)  # collective
    assert w.cd.sigma_smudge == smudging_sigma(w.noise_sum, w.p.n, w.smudging)
    # the realistic case is the one that runs the default notion end to end
    assert (w.cd.smudging.notion == "statistical") == (w.name == REALISTIC)
    assert w.cd.budget == w.smudging.budget


# ---- RKG ------------------------------------------------------------------------------------
@cache
def collective_rlk(name: str, k: int):
    w = world(name, k)
    rkg = RelinKeyGen(w.ctx, peers=k)
    crp = rkg.sample_crp(b"\x08" * 32)
    r1 = [pa.relin_key_share_round1(rkg, crp) for pa in w.parties]
    agg1 = rkg.aggregate([sh for _, sh in r1])
    r2 = [pa.relin_key_share_round2(rkg, r1[i][0], agg1) for i, pa in enumerate(w.parties)]
    return rkg.finalize(agg1, rkg.aggregate(r2))


def switching_key_error(w: World, key, s_prime) -> np.ndarray:
    """b_j + a_j*s_ideal - gadget_j(s'), centered per QP limb: (D, L+K, N)."""
    qp = w.ctx.qp
    g = qp.zeros((key.data.shape[0],))
    gadget_add(w.ctx, g, s_prime)
    e = qp.sub(qp.add(key.data[:, 0], qp.mul(key.data[:, 1], w.sk_ideal.data)), g)
    return centered(qp.intt(e), w.p.q + w.p.p)


@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_rkg_key_is_a_relin_key_for_sk_ideal(case):
    w = world(*case)
    rlk = collective_rlk(*case)
    s2 = w.ctx.qp.mul(w.sk_ideal.data, w.sk_ideal.data)
    err = switching_key_error(w, rlk, s2)
    # error s*e0 + u*e1 + e': s and u have |coeff| <= K, e0/e1 <= K*ETA, e' <= 2K*ETA
    assert limb_consistent(err, 2 * w.p.n * w.k * w.k * ETA + 2 * w.k * ETA)
    assert np.abs(err).max() > 0


@pytest.mark.parametrize("case", TABLE, ids=ids(TABLE))
def test_rkg_relinearizes_like_single_key(case):
    w = world(*case)
    rlk = collective_rlk(*case)
    single = KeyGenerator(w.ctx, prng=PRNG(b"\x46" * 32)).gen_relin_key(w.sk_ideal)
    prod = w.ev.mul(w.cts[0], w.cts[1])
    a = Evaluator(w.ctx, rlk).relinearize(prod)
    b = Evaluator(w.ctx, single).relinearize(prod)
    assert a.size == 2
    want = mod_t(w.x[0] * w.x[1], w.p.t)
    got = w.enc.decode(w.d_ideal.decrypt(a))
    assert np.array_equal(got, want)
    assert np.array_equal(got, w.enc.decode(w.d_ideal.decrypt(b)))
    # and the relinearized product still decrypts collectively
    assert np.array_equal(w.collective_decrypt(a), want)


# ---- GKG ------------------------------------------------------------------------------------
def collective_galois(w: World, g: int):
    gkg = GaloisKeyGen(w.ctx, peers=w.k)
    crp = gkg.sample_crp(b"\x09" * 32, g)
    shares = [pa.galois_key_share(gkg, crp, g) for pa in w.parties]
    return gkg.finalize(gkg.aggregate(shares), crp)


@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_gkg_rotation_matches_single_key(case):
    w = world(*case)
    n = w.p.n
    g = galois_element_rows(n, 1) if w.batching else 5
    gk = collective_galois(w, g)
    assert gk.galois == g
    qp = w.ctx.qp
    s_g = qp.ntt(qp.automorphism(qp.intt(w.sk_ideal.data), g), inplace=True)
    err = switching_key_error(w, gk, s_g)
    assert limb_consistent(err, w.k * ETA)  # sum of K fresh errors
    rot = Evaluator(w.ctx, galois_keys=GaloisKeys(w.p, {g: gk})).apply_galois(w.cts[0], g)
    got = w.enc.decode(w.d_ideal.decrypt(rot))
    if w.batching:
        want = rotate_slots(w.x[0], 1)
        single = KeyGenerator(w.ctx, prng=PRNG(b"\x47" * 32)).gen_galois_key(w.sk_ideal, g)
        ref = Evaluator(w.ctx, galois_keys=GaloisKeys(w.p, {g: single})).apply_galois(w.cts[0], g)
        assert np.array_equal(w.enc.decode(w.d_ideal.decrypt(ref)), want)
    else:
        want = automorphism_plain(w.x[0], g)
    assert np.array_equal(got, want)


# ---- PCKS -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_pcks_reaches_the_receiver_only(case):
    w = world(*case)
    kg = KeyGenerator(w.ctx, prng=PRNG(b"\x48" * 32))
    sk_r = kg.gen_secret_key()
    pk_r = kg.gen_public_key(sk_r)
    pcks = PublicKeySwitch(w.ctx, w.noise_sum, peers=w.k, smudging=w.smudging)
    assert pcks.smudging.notion == ("statistical" if w.name == REALISTIC else "renyi")
    # fresh journals: the world's parties already decrypted ct_sum, so their journals refuse
    parties = make_parties(w.ctx, w.sks, [PRNG(bytes([i + 60]) * 32) for i in range(w.k)])
    w.parties[0].decryption_share(w.cd, w.ct_sum)  # recorded (or made now)
    with pytest.raises(ShareReplay):  # one c1 row, one share, whichever protocol asks
        w.parties[0].public_key_switch_share(pcks, w.ct_sum, pk_r)
    shares = [pa.public_key_switch_share(pcks, w.ct_sum, pk_r) for pa in parties]
    out = pcks.finalize(w.ct_sum, pcks.aggregate(shares))
    want = w.x.sum(0)
    assert np.array_equal(w.enc.decode(Decryptor(w.ctx, sk_r).decrypt(out)), want)
    assert not _decodes_to(w, w.d_ideal.decrypt(out), want)
    other = KeyGenerator(w.ctx, prng=PRNG(b"\x49" * 32)).gen_secret_key()
    assert not _decodes_to(w, Decryptor(w.ctx, other).decrypt(out), want)


# ---- CKS to another collective key ------------------------------------------------------------
@pytest.mark.parametrize("case", TABLE_R, ids=ids(TABLE_R))
def test_keyswitch_to_another_collective_key(case):
    w = world(*case)
    new = [
        KeyGenerator(w.ctx, prng=PRNG(bytes([i + 70]) * 32)).gen_secret_key() for i in range(w.k)
    ]
    sk_new = SecretKey(w.p, w.ctx.qp.sum(np.stack([s.data for s in new])))
    ks = KeySwitch(w.ctx, w.noise_sum, peers=w.k, smudging=w.smudging)
    assert ks.smudging.notion == ("statistical" if w.name == REALISTIC else "renyi")
    parties = make_parties(w.ctx, w.sks, [PRNG(bytes([i + 80]) * 32) for i in range(w.k)])
    shares = [pa.key_switch_share(ks, w.ct_sum, new[i]) for i, pa in enumerate(parties)]
    out = ks.finalize(w.ct_sum, ks.aggregate(shares))
    want = w.x.sum(0)
    assert np.array_equal(w.enc.decode(Decryptor(w.ctx, sk_new).decrypt(out)), want)
    assert not _decodes_to(w, w.d_ideal.decrypt(out), want)
    # decrypting `out` again must smudge ITS noise: e_ct plus the K smudging noises of the switch
    v = ks.smudging.cell(ks.sigma_smudge).proxy_variance()
    switched = NoiseEstimate(w.noise_sum.variance + w.k * v, w.noise_sum.level)
    if w.name == REALISTIC:
        # a statistical flood (~2^70 here) flooded again needs ~166 bits of Q: refused, not
        # decrypted with a width derived from the wrong (pre-switch) noise
        with pytest.raises(NoiseBudgetError, match="statistical"):
            w.decryptor(noise=switched)
        return
    cd_new = w.decryptor(noise=switched, smudging=Smudging(BUDGET, notion="renyi", lam=32))
    got = w.collective_decrypt(out, parties=make_parties(w.ctx, new), cd=cd_new)
    assert np.array_equal(got, want)


# ---- threshold ------------------------------------------------------------------------------
def threshold_cases():
    out = []
    for name, k in TABLE:
        for t in sorted({2, k - 1}):
            if 2 <= t <= k and (name, k, t) not in out:
                out.append((name, k, t))
    return out


THRESHOLD = threshold_cases()


@cache
def threshold_shares(name: str, k: int, t: int):
    w = world(name, k)
    points = list(range(1, k + 1))
    th = Thresholdizer(w.ctx, t, points)
    sent = [th.gen_shares(w.sks[i], i, PRNG(bytes([i + 90, t]) * 16)) for i in range(k)]
    tsks = [th.aggregate([sent[i][j] for i in range(k)], points[j]) for j in range(k)]
    return th, tsks


def threshold_parties(w, th, tsks, active, journals=None):
    journals = journals or {a: mem() for a in active}
    return [Party.threshold(w.ctx, tsks[a - 1], th, active, journal=journals[a]) for a in active]


@pytest.mark.parametrize("case", THRESHOLD, ids=[f"{n}-K={k}-t={t}" for n, k, t in THRESHOLD])
def test_threshold_every_t_subset_decrypts(case):
    name, k, t = case
    w = world(name, k)
    th, tsks = threshold_shares(name, k, t)
    want = w.x.sum(0)
    for active in itertools.combinations(range(1, k + 1), t):
        add = [th.additive_share(tsks[a - 1], active) for a in active]
        total = w.ctx.qp.sum(np.stack([s.data for s in add]))
        assert np.array_equal(total, w.sk_ideal.data), active  # Lagrange recombination is exact
        parties = threshold_parties(w, th, tsks, active)
        assert all(pa.active_set == frozenset(active) for pa in parties)
        assert np.array_equal(w.collective_decrypt(w.ct_sum, parties=parties), want), active


@pytest.mark.parametrize("case", THRESHOLD, ids=[f"{n}-K={k}-t={t}" for n, k, t in THRESHOLD])
def test_threshold_t_minus_one_is_refused_and_forced_is_wrong(case):
    name, k, t = case
    w = world(name, k)
    th, tsks = threshold_shares(name, k, t)
    short = list(range(1, t))
    with pytest.raises(ThresholdError, match=f"exactly {t}"):
        th.additive_share(tsks[0], short)
    with pytest.raises(ThresholdError, match=f"exactly {t}"):
        Party.threshold(w.ctx, tsks[0], th, short, journal=mem())
    add = [th.additive_share(tsks[a - 1], short, force=True) for a in short]
    forced = [
        Party(w.ctx, s, peer_id=a, journal=mem(), active_set=frozenset(short))
        for s, a in zip(add, short)
    ]
    assert not np.array_equal(w.collective_decrypt(w.ct_sum, parties=forced), w.x.sum(0))
    if k > t:
        a1, a2 = tuple(range(1, t + 1)), tuple(range(2, t + 2))
        # shares combined across two different active sets are refused, naming the field
        s1 = threshold_parties(w, th, tsks, a1)[1].decryption_share(w.cd, w.ct_sum)
        s2 = threshold_parties(w, th, tsks, a2)[1].decryption_share(w.cd, w.ct_sum)
        with pytest.raises(ShareMismatch, match="active_set"):
            w.cd.aggregate([s1, s2])
        # one long-term share, one journal: a second active set cannot re-share the same c1
        journals = {a: mem() for a in range(1, k + 1)}
        threshold_parties(w, th, tsks, a1, journals)[1].decryption_share(w.cd, w.ct_sum)
        with pytest.raises(ShareReplay):
            threshold_parties(w, th, tsks, a2, journals)[0].decryption_share(w.cd, w.ct_sum)
        # the decryptor needs exactly the active set the shares carry
        shares = [pa.decryption_share(w.cd, w.ct_sum) for pa in threshold_parties(w, th, tsks, a1)]
        with pytest.raises(ShareMismatch, match=f"expected {t}"):
            w.cd.decrypt(w.ct_sum, w.cd.aggregate(shares[1:]))


def test_thresholdizer_refuses_bad_points():
    p = preset("TOY8")
    ctx = Context(p, "cpu")
    with pytest.raises(ThresholdError, match="distinct"):
        Thresholdizer(ctx, 2, [1, 1, 2])
    with pytest.raises(ThresholdError, match="must lie"):
        Thresholdizer(ctx, 2, [0, 1, 2])
    with pytest.raises(ThresholdError, match="threshold"):
        Thresholdizer(ctx, 4, [1, 2, 3])
    with pytest.raises(TypeError, match="Context"):
        Thresholdizer(p, 2, [1, 2, 3])
    th = Thresholdizer(ctx, 2, [1, 2, 3])
    _, tsks = threshold_shares("TOY8", 3, 2)
    with pytest.raises(ThresholdError, match="not in the active set"):
        th.additive_share(tsks[0], [2, 3])
    with pytest.raises(ThresholdError, match="unknown points"):
        th.additive_share(tsks[0], [1, 9])


# ---- noise: measured against the estimate ------------------------------------------------------
def zero_cts(w: World, count: int, level: int | None = None):
    """Encryptions of zero under the collective key (phase = noise exactly)."""
    zeros = w.enc.encode(np.zeros((count, w.p.n), dtype=np.int64))
    cts = [
        Encryptor(w.ctx, w.pk, prng=PRNG(bytes([i + 100]) * 32)).encrypt(zeros) for i in range(w.k)
    ]
    if level is not None:
        cts = [w.ev.mod_switch_to(c, level) for c in cts]
    return cts


NOISE = [("TOY8", 3), ("TOY8", 8), ("TOY6", 2)]


@pytest.mark.parametrize("case", NOISE, ids=ids(NOISE))
@pytest.mark.parametrize("level", [None, 2], ids=["top", "switched-to-2"])
def test_measured_noise_within_estimate(case, level):
    w = world(*case)
    kappa = tail_factor(w.p.n)
    fresh = NoiseEstimate.fresh(w.p, w.k)
    if level is not None:
        fresh = fresh.mod_switch(w.p, level, w.k)
    cts = zero_cts(w, 2, level)
    for ct, est in ((cts[0], fresh), (w.ev.sum(cts), fresh.summed(w.k))):
        worst = invariant_noise_max(w.ctx, ct, w.sk_ideal) / w.p.t  # max |e|
        assert est.std / 4 <= worst <= kappa * est.std, (worst, est.std)
        e = crt_centered(w.ctx.backend.to_numpy(phase(w.ctx, ct, w.sk_ideal)), w.p.q[: ct.level])
        assert 0.7 * est.std <= e.std() <= 1.3 * est.std, (e.std(), est.std)


def test_smudging_sigma_is_derived_from_the_noise():
    est = NoiseEstimate(variance=1234.0, level=3)
    for lam in (32, 40, 64):
        renyi = Smudging(1, notion="renyi", lam=lam)
        want = 2 ** (lam / 2) * math.sqrt(1234.0)
        assert smudging_sigma(est, 256, renyi) == pytest.approx(want)
        # statistical: 2^(lam+1) N D B_ct / (sqrt(2 pi) (1 - 2^-53)), far wider
        stat = Smudging(1, lam=lam)
        b_ct = math.sqrt(1234.0) * math.sqrt(2 * math.log(2) * (lam + 2 + 8))
        want = 2 ** (lam + 1) * 256 * b_ct / (math.sqrt(2 * math.pi) * (1 - 2.0**-53))
        assert smudging_sigma(est, 256, stat) == pytest.approx(want, rel=1e-12)
    p = preset("TOY8")
    spec = Smudging(1, notion="renyi", lam=40)
    assert check_decryptable(p, est, 3, spec) == smudging_sigma(est, p.n, spec)
    with pytest.raises(TypeError, match="Smudging"):
        check_decryptable(p, est, 3, 40)  # a bare lambda no longer selects a notion


def test_check_decryptable_refuses_too_small_modulus():
    w = world("TOY8", 3)
    with pytest.raises(NoiseBudgetError, match=r"statistical, lambda=128.*log2 Q >= .*larger Q"):
        w.decryptor(smudging=Smudging(1, lam=128))
    # renyi draws a plain rounded Gaussian: a width past 2^48 is refused by the sampler's range
    with pytest.raises(ValueError, match=r"renyi smudging sigma .* outside \(0, 2\^48\)"):
        w.decryptor(smudging=Smudging(BUDGET, notion="renyi", lam=128))
    # the default notion over 2^20 decryptions does not fit a toy set either, and says so
    with pytest.raises(NoiseBudgetError, match=r"statistical, lambda=40, D=1048576"):
        w.decryptor(smudging=Smudging(BUDGET))
    with pytest.raises(NoiseBudgetError, match=r"statistical.*D=1048576"):
        KeySwitch(w.ctx, w.noise_sum, peers=3, smudging=Smudging(BUDGET))
    one = Smudging(1, notion="renyi", lam=40)
    low = NoiseEstimate.fresh(w.p, 3).mod_switch(w.p, 1, 3).summed(3)
    with pytest.raises(
        NoiseBudgetError, match=r"renyi, lambda=40, D=1\).*level 1 has 30\.0.*at level 2"
    ):
        CollectiveDecrypt(w.ctx, low, peers=3, smudging=one)
    with pytest.raises(NoiseBudgetError, match="level"):
        PublicKeySwitch(w.ctx, low, peers=3, smudging=one)
    # the level the message names is indeed enough
    two = NoiseEstimate.fresh(w.p, 3).mod_switch(w.p, 2, 3).summed(3)
    cd = CollectiveDecrypt(w.ctx, two, peers=3, smudging=one)
    # and the estimate's level must match the ciphertext's
    with pytest.raises(ValueError, match="level"):
        make_parties(w.ctx, w.sks[:1])[0].decryption_share(cd, w.ct_sum)


@pytest.mark.parametrize("budget", [0, -1, 2.0, True, None])
def test_decryption_budget_is_a_positive_int(budget):
    # D is part of the Smudging spec (the bound holds for D decryptions): validated there
    with pytest.raises(ValueError, match=r"budget \(decryptions D\)"):
        Smudging(budget, notion="renyi", lam=40)
    with pytest.raises(ValueError, match=r"budget \(decryptions D\)"):
        Smudging(budget)


def test_key_switch_protocols_take_a_smudging_spec():
    w = world("TOY8", 3)
    for proto in (CollectiveDecrypt, KeySwitch, PublicKeySwitch):
        with pytest.raises(TypeError, match="Smudging"):
            proto(w.ctx, w.noise_sum, peers=3, smudging=40)  # a bare lambda is refused
        with pytest.raises(TypeError):
            proto(w.ctx, w.noise_sum, peers=3)  # no default: the notion and D are stated
        with pytest.raises(TypeError, match="budget"):
            proto(w.ctx, w.noise_sum, peers=3, smudging=TOY_SMUDGING, budget=10)
        spec = Smudging(7, notion="renyi", lam=40)
        p = proto(w.ctx, w.noise_sum, peers=3, smudging=spec)
        assert p.smudging is spec and p.budget == 7
        assert p.sigma_smudge == smudging_sigma(w.noise_sum, w.p.n, spec)
    for bad in ({"lam": 31}, {"lam": 257}, {"notion": "gaussian"}):
        with pytest.raises(ValueError, match="lam|notion"):
            Smudging(1, **bad)


def test_smudged_decryption_noise_has_the_derived_width():
    w = world("TOY8", 3)
    cts = zero_cts(w, 8)
    ct = w.ev.sum(cts)
    parties = make_parties(w.ctx, w.sks, [PRNG(bytes([i + 110]) * 32) for i in range(w.k)])
    agg = w.cd.aggregate([pa.decryption_share(w.cd, ct) for pa in parties])
    qb = w.ctx.q_basis(ct.level)
    ph = qb.add(ct.data[..., 0, :, :], agg.data)  # c0 + sum h_i = e_ct + sum e_smudge_i
    e = crt_centered(ph, w.p.q)
    want = math.sqrt(w.k) * w.cd.sigma_smudge
    assert 0.85 * want <= e.std() <= 1.15 * want, (e.std(), want)
    assert abs(e.mean()) <= 0.1 * want
    # and it still decrypts: every coefficient is far below Q/(2t)
    assert np.abs(e).max() < w.p.q_at(ct.level) / (2 * w.p.t)
    assert not np.any(w.enc.decode(w.cd.decrypt(ct, agg)))


# ---- typed shares and combine checks ------------------------------------------------------------
def test_aggregate_refuses_shares_that_do_not_belong_together():
    w = world("TOY8", 3)
    cd = w.cd
    s0, s1 = (pa.decryption_share(cd, w.ct_sum) for pa in w.parties[:2])
    other_ct = w.ev.sum(w.cts[:2])
    with pytest.raises(TypeError, match="PublicKeyShare"):
        cd.aggregate([w.ckg_shares[0], s1])
    with pytest.raises(TypeError):
        cd.aggregate([s0, w.ckg_shares[1]])
    with pytest.raises(TypeError, match="DecryptionShare"):
        w.ckg.aggregate([s0, s1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        s0.level = 2  # type: ignore[misc]
    with pytest.raises(ShareMismatch, match="digest"):
        cd.aggregate([s0, w.parties[1].decryption_share(cd, other_ct)])
    with pytest.raises(ShareMismatch, match="level"):
        cd.aggregate([s0, dataclasses.replace(s1, level=2)])
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([s0, s1, dataclasses.replace(s0)])
    with pytest.raises(ShareMismatch, match="counted twice"):
        cd.aggregate([cd.aggregate([s0, s1]), s1])
    other = Parameters(dataclasses.replace(PRESETS["TOY8"], t_bits=18, name="TOY8-t18"))
    with pytest.raises(ShareMismatch, match="parameters"):
        cd.aggregate([s0, dataclasses.replace(s1, params=other)])
    rkg = RelinKeyGen(w.ctx, peers=3)
    crp = rkg.sample_crp(b"\x33" * 32)
    eph, r1 = w.parties[0].relin_key_share_round1(rkg, crp)
    r2 = w.parties[0].relin_key_share_round2(rkg, eph, rkg.aggregate([r1]))
    with pytest.raises(TypeError, match="RelinKeyShareRound2"):
        rkg.aggregate([r1, r2])
    with pytest.raises(TypeError, match="round 1"):
        w.parties[1].relin_key_share_round2(rkg, eph, r2)
    with pytest.raises(ValueError, match="no shares"):
        cd.aggregate([])


def test_finalizers_refuse_missing_peers_and_foreign_aggregates():
    w = world("TOY8", 3)
    with pytest.raises(ShareMismatch, match=r"2 peers, expected 3; missing \[2\]"):
        w.ckg.finalize(w.ckg.aggregate(w.ckg_shares[:2]), w.crp)
    with pytest.raises(ShareMismatch, match="another CRP"):
        w.ckg.finalize(w.ckg.aggregate(w.ckg_shares), w.ckg.sample_crp(b"\x36" * 32))
    shares = [pa.decryption_share(w.cd, w.ct_sum) for pa in w.parties]
    # K-1 shares used to decrypt to wrong values silently: now every finaliser refuses
    with pytest.raises(ShareMismatch, match="expected 3"):
        w.cd.decrypt(w.ct_sum, w.cd.aggregate(shares[:2]))
    with pytest.raises(ShareMismatch, match="unexpected"):
        w.cd.decrypt(w.ct_sum, w.cd.aggregate(shares), peers={0, 1})
    with pytest.raises(ShareMismatch, match="another ciphertext"):
        w.cd.decrypt(w.ev.sum(w.cts[:2]), w.cd.aggregate(shares))
    ks = KeySwitch(w.ctx, w.noise_sum, peers=3, smudging=w.smudging)
    with pytest.raises(TypeError):
        ks.finalize(w.ct_sum, w.cd.aggregate(shares))
    rkg = RelinKeyGen(w.ctx, peers=3)
    crp = rkg.sample_crp(b"\x37" * 32)
    r1 = [pa.relin_key_share_round1(rkg, crp) for pa in w.parties]
    agg1 = rkg.aggregate([s for _, s in r1])
    r2 = [pa.relin_key_share_round2(rkg, r1[i][0], agg1) for i, pa in enumerate(w.parties)]
    with pytest.raises(ShareMismatch, match="expected 3"):
        rkg.finalize(agg1, rkg.aggregate(r2[:2]))
    gkg = GaloisKeyGen(w.ctx, peers=3)
    with pytest.raises(ShareMismatch, match="Galois element 5"):
        w.parties[0].galois_key_share(gkg, gkg.sample_crp(b"\x38" * 32, 3), 5)


def test_protocols_and_parties_take_a_context_and_a_journal():
    w = world("TOY8", 3)
    with pytest.raises(TypeError, match="Context"):
        PublicKeyGen(w.p, peers=3)
    with pytest.raises(TypeError, match="ShareJournal"):
        Party(w.ctx, w.sks[0], peer_id=0, journal=None)
    with pytest.raises(ValueError, match="peer_id"):
        Party(w.ctx, w.sks[0], peer_id=-1, journal=mem())
    with pytest.raises(ValueError, match="peers"):
        PublicKeyGen(w.ctx, peers=0)
    assert isinstance(w.parties[0].decryption_share(w.cd, w.ct_sum), DecryptionShare)


# ---- the parameter planner --------------------------------------------------------------------
@pytest.mark.parametrize("k", [4, 16], ids=lambda k: f"K={k}-b=16")
def test_planner_is_secure_and_within_the_wire_budget(k):
    plan = choose_parameters(k, 16, smudging=Smudging(1000))  # default notion: statistical
    assert plan.smudging.notion == "statistical"
    assert not plan.literal.allow_insecure
    p = Parameters(plan.literal)  # builds without allow_insecure: 128-bit secure
    assert plan.bytes_per_value <= 12
    assert plan.pack * plan.width < p.t.bit_length()
    assert plan.width >= 16 + math.ceil(math.log2(k))
    assert math.log2(p.q_at(plan.level)) >= plan.wire_log_q
    assert plan.level < len(p.q)  # one prime is switched away before sending
    assert f"{plan.bytes_per_value:.2f} B/value" in plan.describe()
    noise = NoiseEstimate.fresh(p, k).mod_switch(p, plan.level, k).summed(k)
    assert check_decryptable(p, noise, k, plan.smudging) > 0


@pytest.mark.parametrize(
    "k",
    [
        2,
        3,
        8,
    ],
    ids=lambda k: f"K={k}-b=16",
)
def test_planner_within_the_wire_budget_for_other_peer_counts(k):
    assert choose_parameters(k, 16, smudging=Smudging(1000)).bytes_per_value <= 12


def test_planned_set_decrypts_the_smudged_sum_of_4_peers():
    k = 4
    # two ciphertext rows are decrypted below: D = 2, default (statistical) notion
    plan = choose_parameters(k, 16, smudging=Smudging(2))
    p = Parameters(plan.literal)
    ctx = Context(p, "cpu")
    rngs = [PRNG(bytes([i + 130]) * 32) for i in range(k)]
    sks = [KeyGenerator(ctx, prng=rngs[i]).gen_secret_key() for i in range(k)]
    parties = make_parties(ctx, sks, rngs)
    ckg = PublicKeyGen(ctx, peers=k)
    crp = ckg.sample_crp(b"\x39" * 32)
    pk = ckg.finalize(ckg.aggregate([pa.public_key_share(ckg, crp) for pa in parties]), crp)
    enc = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    values = np.random.default_rng(5).integers(-(1 << 15), 1 << 15, (k, 2, enc.slots))
    values[0, 0, :8] = (1 << 15) - 1  # extremes: the K-fold sum must not carry
    values[1:, 0, :8] = (1 << 15) - 1
    values[:, 1, :8] = -(1 << 15)
    offset = 1 << 15
    ev = Evaluator(ctx)
    cts = [
        ev.mod_switch_to(
            Encryptor(ctx, pk, prng=rngs[i]).encrypt(enc.encode(values[i] + offset)), plan.level
        )
        for i in range(k)
    ]
    assert cts[0].level == plan.level
    total = ev.sum(cts)
    noise = NoiseEstimate.fresh(p, k).mod_switch(p, plan.level, k).summed(k)
    cd = CollectiveDecrypt(ctx, noise, peers=k, smudging=plan.smudging)
    assert cd.smudging.notion == "statistical" and cd.budget == 2
    shares = [pa.decryption_share(cd, total) for pa in parties]
    got = enc.decode(cd.decrypt(total, cd.aggregate(shares))) - k * offset
    assert np.array_equal(got, values.sum(0))
    # the round planner packs many sub-slots into a wide t = 2^k (8 or more per coefficient)
    assert ctx.params.t_wide and plan.pack >= 8


def test_planner_command_prints_the_plan(capsys):
    from gpubfv.mhe.__main__ import main

    main(["--peers", "16", "--bits", "16"])
    out = capsys.readouterr().out
    assert "B/value" in out and "128-bit" in out


# ---------------------------------------------------------------------- property-based


@settings(max_examples=12, deadline=None)
@given(
    log_n=st.sampled_from([4, 5, 6]),
    q_bits=st.lists(st.integers(24, 30), min_size=3, max_size=4),
    t_bits=st.integers(12, 20),
    k=st.integers(2, 5),
    lam=st.sampled_from([32, 40]),
    data=st.data(),
)
def test_property_collective_sum_equals_numpy(log_n, q_bits, t_bits, k, lam, data):
    """Random insecure sets, peer counts and inputs: CKG -> K encryptions -> sum -> smudged
    collective decryption gives numpy's sum, and threshold (k-1 of k) does too."""
    lit = ParametersLiteral(
        log_n=log_n, q_bits=tuple(q_bits), p_bits=(30,), t_bits=t_bits, allow_insecure=True
    )
    try:
        p = Parameters(lit)
    except ParameterError:
        assume(False)  # e.g. no t of that size = 1 mod 2N
    ctx = Context(p, "cpu")
    rngs = [PRNG(bytes([i + 1]) * 32) for i in range(k)]
    sks = [KeyGenerator(ctx, prng=rngs[i]).gen_secret_key() for i in range(k)]
    parties = make_parties(ctx, sks)
    ckg = PublicKeyGen(ctx, peers=k)
    crp = ckg.sample_crp(bytes(32))
    pk = ckg.finalize(ckg.aggregate([pa.public_key_share(ckg, crp) for pa in parties]), crp)
    enc = BatchEncoder(ctx)
    bound = (p.t // 2) // k
    xs = np.array(
        data.draw(
            st.lists(
                st.lists(st.integers(-bound, bound), min_size=p.n, max_size=p.n),
                min_size=k,
                max_size=k,
            )
        ),
        dtype=np.int64,
    )
    total = Evaluator(ctx).sum(
        [Encryptor(ctx, pk, prng=rngs[i]).encrypt(enc.encode(xs[i])) for i in range(k)]
    )
    noise = NoiseEstimate.fresh(p, k).summed(k)
    try:
        cd = CollectiveDecrypt(ctx, noise, peers=k, smudging=Smudging(1, "renyi", lam))
    except NoiseBudgetError:
        assume(False)  # the derivation refuses: nothing to check here
    shares = [pa.decryption_share(cd, total) for pa in parties]
    assert np.array_equal(enc.decode(cd.decrypt(total, cd.aggregate(shares))), xs.sum(0))
    th = Thresholdizer(ctx, k - 1, list(range(1, k + 1)))
    dealt = [th.gen_shares(s, i) for i, s in enumerate(sks)]
    tsks = [th.aggregate([dealt[i][j] for i in range(k)], j + 1) for j in range(k)]
    active = list(range(2, k + 1))  # peer 1 is away
    tparties = [Party.threshold(ctx, tsks[a - 1], th, active, journal=mem()) for a in active]
    tshares = [pa.decryption_share(cd, total) for pa in tparties]
    assert np.array_equal(enc.decode(cd.decrypt(total, cd.aggregate(tshares))), xs.sum(0))


def _decodes_to(w, pt, want) -> bool:
    """Whether ``pt`` decodes to ``want``; a wrong key gives noise, which with a wide t may not
    even fit the int64 decode (EncodingError): that too is "not the plaintext"."""
    try:
        return bool(np.array_equal(w.enc.decode(pt), want))
    except EncodingError:
        return False
