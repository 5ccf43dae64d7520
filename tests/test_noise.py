"""Measured invariant noise max |[t (c0 + c1 s)]_Q| against the predicted worst-case bounds.

Errors are centered binomial with |e| <= ETA = 21, secrets and the encryption randomness u are
ternary, so a product of an error and a ternary polynomial has coefficients <= N * ETA. With
Delta-scaling m -> round(Q m / t), the rounding contributes at most t/2 more. Hence
- public key:  t*(c0 + c1 s) = t*(e*u + e1 + e2*s) + rounding:  <= t*(2*N*ETA + ETA + 1) + t
- secret key:  t*(e + rounding):                                <= t*(ETA + 1)
- sum of K:    the invariant noises add:                        <= K * fresh
- mul_plain by m (|m_i| <= t/2, coefficient form):              <= N * (t/2) * fresh
"""

from __future__ import annotations

import math
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402

from gpubfv import (  # noqa: E402
    PRNG,
    BatchEncoder,
    Ciphertext,
    Decryptor,
    Encryptor,
    Evaluator,
    KeyGenerator,
    preset,
)
from gpubfv.context import Context  # noqa: E402
from gpubfv.encryptor import invariant_noise_max  # noqa: E402
from gpubfv.params import ERROR_BOUND  # noqa: E402

ETA = 21
TOYS = ["TOY4", "TOY6", "TOY8"]


class Kit:
    def __init__(self, name: str) -> None:
        self.p = p = preset(name)
        self.ctx = ctx = Context(p, "cpu")
        kg = KeyGenerator(ctx, prng=PRNG(b"\x05" * 32))
        self.sk = kg.gen_secret_key()
        self.pk = kg.gen_public_key(self.sk)
        self.rlk = kg.gen_relin_key(self.sk)
        self.gks = kg.gen_galois_keys(self.sk, steps=[1])
        self.enc = BatchEncoder(ctx)
        self.e = Encryptor(ctx, self.pk, prng=PRNG(b"\x06" * 32))
        self.es = Encryptor(ctx, self.sk, prng=PRNG(b"\x07" * 32))
        self.d = Decryptor(ctx, self.sk)
        self.ev = Evaluator(ctx, self.rlk, self.gks)

    def noise(self, ct: Ciphertext) -> int:
        return invariant_noise_max(self.ctx, ct, self.sk)

    def rand(self, seed: int, batch: tuple[int, ...] = ()) -> np.ndarray:
        h = (self.p.t - 1) // 2
        return np.random.default_rng(seed).integers(-h, h + 1, batch + (self.p.n,))


@cache
def kit(name: str) -> Kit:
    return Kit(name)


def pk_bound(n: int, t: int) -> int:
    return t * (2 * n * ETA + ETA + 1) + t


def sk_bound(t: int) -> int:
    return t * (ETA + 1)


def test_error_bound_constant():
    assert ERROR_BOUND == ETA


@pytest.mark.parametrize("name", TOYS)
def test_invariant_noise_tool_on_a_known_ciphertext(name):
    """c = (round(Q m/t) + e, 0): [t c0]_Q = t*e + (t*round(Q m/t) - Q m), exactly."""
    k = kit(name)
    p, qb = k.p, k.ctx.q_basis()
    Q, t, n = qb.product, p.t, p.n
    rng = np.random.default_rng(1)
    m = [int(v) for v in rng.integers(0, t, n)]
    e = [int(v) for v in rng.integers(-1000, 1001, n)]
    c0 = [reference.round_div(Q * mi, t) + ei for mi, ei in zip(m, e)]
    data = np.zeros((2, len(p.q), n), dtype=np.uint32)
    data[0] = reference.to_residues(c0, p.q)
    ct = Ciphertext(p, data)
    want = max(abs(reference.centered(t * c, Q)) for c in c0)
    assert k.noise(ct) == want
    assert want <= t * 1000 + t // 2
    assert k.d.noise_budget(ct) == pytest.approx(math.log2(Q / 2) - math.log2(want))
    assert [int(v) for v in k.d.decrypt(ct).data] == m


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_public_key_noise(name, seed):
    k = kit(name)
    n, t = k.p.n, k.p.t
    ct = k.e.encrypt(k.enc.encode(k.rand(seed, (4,))))
    measured = k.noise(ct)
    bound = pk_bound(n, t)
    assert measured <= bound
    assert measured > bound / 2**20  # the measurement is not vacuous
    assert measured > t  # the e*u term is there
    budget = k.d.noise_budget(ct)
    assert budget == pytest.approx(math.log2(k.p.big_q / 2) - math.log2(measured))


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_secret_key_noise(name, seed):
    k = kit(name)
    t = k.p.t
    ct = k.es.encrypt(k.enc.encode(k.rand(seed, (4,))))
    measured = k.noise(ct)
    assert measured <= sk_bound(t)
    assert measured > sk_bound(t) / 2**20
    # a secret-key ciphertext is far less noisy than a public-key one
    assert measured < k.noise(k.e.encrypt(k.enc.encode(k.rand(seed))))


@pytest.mark.parametrize("name", TOYS)
@pytest.mark.parametrize("K", [2, 8, 32], ids=lambda v: f"K={v}")
def test_sum_noise(name, K):
    k = kit(name)
    n, t = k.p.n, k.p.t
    cts = k.e.encrypt(k.enc.encode(k.rand(K, (K,))))
    fresh = [k.noise(cts[i]) for i in range(K)]
    total = k.noise(k.ev.sum(cts))
    assert total <= sum(fresh)  # noises add (the Q-multiples vanish mod Q)
    assert total <= K * pk_bound(n, t)
    scts = k.es.encrypt(k.enc.encode(k.rand(K + 1, (K,))))
    assert k.noise(k.ev.sum(scts)) <= K * sk_bound(t)


@pytest.mark.parametrize("name", TOYS)
def test_mul_plain_noise(name):
    k = kit(name)
    n, t = k.p.n, k.p.t
    ct = k.e.encrypt(k.enc.encode(k.rand(3)))
    fresh = k.noise(ct)
    pt = k.enc.encode(k.rand(4))  # coefficients are uniform mod t: |m_i| <= t/2 centered
    out = k.ev.mul_plain(ct, pt)
    measured = k.noise(out)
    assert measured <= n * (t // 2) * fresh
    assert measured <= n * (t // 2) * pk_bound(n, t)
    assert measured > fresh  # it did grow


@pytest.mark.parametrize("name", TOYS)
def test_add_plain_and_neg_keep_noise(name):
    k = kit(name)
    t = k.p.t
    ct = k.e.encrypt(k.enc.encode(k.rand(5)))
    fresh = k.noise(ct)
    assert k.noise(k.ev.neg(ct)) == fresh
    # adding round(Q m/t) adds at most one more rounding term t/2 (and the wrap of m1+m2)
    assert k.noise(k.ev.add_plain(ct, k.enc.encode(k.rand(6)))) <= fresh + t


@pytest.mark.parametrize("name", TOYS)
def test_budget_after_mul_relin_and_rotation(name):
    k = kit(name)
    a = k.e.encrypt(k.enc.encode(k.rand(7)))
    b = k.e.encrypt(k.enc.encode(k.rand(8)))
    fresh = min(k.d.noise_budget(a), k.d.noise_budget(b))
    prod = k.ev.mul(a, b)
    rel = k.ev.relinearize(prod)
    after = k.d.noise_budget(rel)
    assert 0 < after < fresh
    # relinearization adds little compared to the tensor product itself
    assert after >= k.d.noise_budget(prod) - 2
    rot = k.ev.rotate_rows(a, 1)
    assert 0 < k.d.noise_budget(rot) <= fresh + 0.5
    if name == "TOY8":
        assert after > 20  # TOY8 has room for a multiplication with margin


@pytest.mark.parametrize("name", TOYS)
def test_mod_switch_reduces_noise_with_the_modulus(name):
    k = kit(name)
    ct = k.e.encrypt(k.enc.encode(k.rand(9)))
    L = len(k.p.q)
    low = k.ev.mod_switch_to(ct, L - 1)
    # v' <= v/q_L + t*(1 + ||s||_1)/2 (rounding of c0 and c1), ||s||_1 <= N
    n, t, ql = k.p.n, k.p.t, k.p.q[-1]
    assert k.noise(low) <= k.noise(ct) / ql + t * (n + 1) / 2 + 1
    assert k.d.noise_budget(low) > 0


# ---- the decryption check under a Smudging spec ------------------------------------------------
from gpubfv.mhe.noise import (  # noqa: E402
    NoiseBudgetError,
    NoiseEstimate,
    check_decryptable,
    required_log_q,
    smudging_sigma,
)
from gpubfv.mhe.planner import choose_parameters  # noqa: E402
from gpubfv.mhe.smudging import Smudging  # noqa: E402


@cache
def _plan(notion: str):
    return choose_parameters(4, 16, smudging=Smudging(1000, notion))


@pytest.mark.parametrize("notion", ["statistical", "renyi"])
def test_check_decryptable_returns_the_derived_sigma(notion):
    plan = _plan(notion)
    spec, p = plan.smudging, plan.params
    noise = NoiseEstimate.fresh(p, 4).mod_switch(p, plan.level, 4).summed(4)
    sigma = check_decryptable(p, noise, 4, spec)
    assert sigma == smudging_sigma(noise, p.n, spec) == spec.sigma(noise.std, p.n)
    # the modulus the level has is at least what the smudged sum needs, with tau from the spec
    tau = spec.sum_bound(sigma, noise.std, 4, p.n)
    assert math.log2(p.q_at(plan.level)) >= math.log2(2 * p.t * (tau + 1))
    assert required_log_q(p.n, p.t, noise, 4, spec) == pytest.approx(math.log2(2 * p.t * (tau + 1)))


def test_check_decryptable_refuses_and_names_the_level():
    plan = _plan("statistical")
    p = plan.params
    low = NoiseEstimate.fresh(p, 4).mod_switch(p, plan.level - 1, 4).summed(4)
    with pytest.raises(NoiseBudgetError, match=r"keep the ciphertext at level \d") as err:
        check_decryptable(p, low, 4, plan.smudging)
    assert "statistical" in str(err.value) and "D=1000" in str(err.value)
    # a budget far beyond the plan's: no level of these parameters holds it
    huge = Smudging(2**60)
    top = NoiseEstimate.fresh(p, 4).summed(4)
    with pytest.raises(NoiseBudgetError, match="larger Q"):
        check_decryptable(p, top, 4, huge)


@pytest.mark.parametrize("bad", [40, 40.0, None, "statistical"])
def test_check_decryptable_refuses_a_bare_lambda(bad):
    plan = _plan("statistical")
    with pytest.raises(TypeError, match="Smudging"):
        check_decryptable(plan.params, plan.wire_noise, 4, bad)
    with pytest.raises(TypeError, match="Smudging"):
        smudging_sigma(plan.wire_noise, plan.params.n, bad)


def test_statistical_is_wider_than_renyi_by_the_budget():
    est = NoiseEstimate(variance=1234.0, level=3)
    for d in (1, 1000, 10**6):
        stat = smudging_sigma(est, 8192, Smudging(d))
        ren = smudging_sigma(est, 8192, Smudging(d, "renyi"))
        assert ren == 2.0**20 * math.sqrt(1234.0)
        # 2^(lam/2+1) N D (B_ct/sigma_ct)/sqrt(2 pi) over the ratio: log2(N D) + 21 + log2 kappa
        extra = math.log2(stat / ren) - math.log2(8192 * d) - 21
        assert 1.5 < extra < 3.5
