"""Parameter sets: secure presets within the HE-standard bound, refusals with a reason code."""

from __future__ import annotations

import copy
import math
import pickle

import pytest

from gpubfv import PRESETS, ParameterError, Parameters, ParametersLiteral, preset
from gpubfv.params import HE_STANDARD_128
from gpubfv.ring.modmath import is_prime

SECURE = ["PN12", "PN13", "PN14", "PN15", "PN16"]
TOYS = ["TOY4", "TOY6", "TOY8"]


def ntt_prime(bits: int, n: int, skip: int = 0) -> int:
    """The (skip+1)-th largest prime q = 1 mod 2n below 2^bits (independent of gpubfv)."""
    q = (1 << bits) - 1
    q -= (q - 1) % (2 * n)
    while True:
        if is_prime(q):
            if skip == 0:
                return q
            skip -= 1
        q -= 2 * n


@pytest.mark.parametrize("name", SECURE, ids=[f"preset={n}" for n in SECURE])
def test_secure_presets_build_within_bound(name):
    p = preset(name)
    assert not p.insecure
    assert p.n == 1 << int(name[2:])
    assert p.log_qp <= HE_STANDARD_128[p.n]
    assert math.log2(math.prod(p.q) * math.prod(p.p)) == pytest.approx(p.log_qp)
    moduli = p.q + p.p
    assert len(set(moduli)) == len(moduli)
    for m in moduli:
        assert is_prime(m) and m < 1 << 30 and (m - 1) % (2 * p.n) == 0
    assert is_prime(p.t) and p.t not in moduli
    assert (p.t - 1) % (2 * p.n) == 0  # presets batch


@pytest.mark.parametrize("name", TOYS, ids=[f"preset={n}" for n in TOYS])
def test_toy_sets_are_marked_insecure(name):
    p = preset(name)
    assert p.insecure and p.literal.allow_insecure
    assert "INSECURE" in p.describe()
    # the same literal without the opt-out is refused
    lit = PRESETS[name]
    with pytest.raises(ParameterError) as exc:
        Parameters(ParametersLiteral(**{**lit.to_dict(), "allow_insecure": False}))
    assert exc.value.reason == "insecure"


def test_unknown_preset():
    with pytest.raises(ParameterError) as exc:
        preset("PN99")
    assert exc.value.reason == "unknown-preset"


N = 1 << 12  # bound 109 bits: two 30-bit primes and a 20-bit t are fine
Q1, Q2, Q3 = (ntt_prime(30, N, k) for k in range(3))
T = ntt_prime(20, N)  # batching plaintext prime (= 1 mod 2N)
TOY8_FINGERPRINT = "6adc9b830b953e241da655fe857b1255"
assert not is_prime(3 * 2 * N + 1) and is_prime(65539) and 65538 % (2 * N)


def composite_1_mod_2n(n: int) -> int:
    q = (1 << 30) - 1
    q -= (q - 1) % (2 * n)
    while is_prime(q):
        q -= 2 * n
    return q


def test_valid_explicit_set_builds():
    p = Parameters(ParametersLiteral(log_n=12, q=(Q1, Q2), p=(Q3,), t=T))
    assert (p.n, p.q, p.p, p.t) == (N, (Q1, Q2), (Q3,), T)
    assert p.big_q == Q1 * Q2 and p.big_p == Q3
    assert Parameters(ParametersLiteral(log_n=12, q=(Q1, Q2), t=65539, batching=False)).t == 65539


# (id, literal keyword arguments, expected reason)
REFUSALS = [
    ("q-not-prime", dict(q=(Q1, composite_1_mod_2n(N)), t=T), "not-prime"),
    ("q-not-ntt-friendly", dict(q=(Q1, 1_000_003), t=T), "not-ntt-friendly"),
    ("q-over-30-bits", dict(q=(Q1, ntt_prime(31, N)), t=T), "modulus-size"),
    ("q_bits-over-30", dict(q_bits=(31, 30), t=T), "modulus-size"),
    ("p-over-30-bits", dict(q=(Q1, Q2), p=(ntt_prime(31, N),), t=T), "modulus-size"),
    ("duplicate-q", dict(q=(Q1, Q1), t=T), "not-coprime"),
    ("q-equals-p", dict(q=(Q1, Q2), p=(Q2,), t=T), "not-coprime"),
    ("t-not-prime", dict(q=(Q1, Q2), t=3 * 2 * N + 1), "plain-modulus"),
    ("t-equals-q", dict(q=(Q1, Q2), t=Q1, batching=False), "not-coprime"),
    ("t-equals-p", dict(q=(Q1, Q2), p=(Q3,), t=Q3, batching=False), "not-coprime"),
    ("batching-t-not-1-mod-2N", dict(q=(Q1, Q2), t=65539), "no-batching"),
    ("no-t", dict(q=(Q1, Q2)), "no-t"),
    ("no-q", dict(t=T), "no-q"),
    ("logQP-5x30-over-109", dict(q_bits=(30,) * 5, t_bits=20), "insecure"),
    ("logQP-4x27+p30-over-109", dict(q_bits=(27,) * 3, p_bits=(30,), t_bits=20), "insecure"),
]


@pytest.mark.parametrize("kwargs,reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_carry_a_reason(kwargs, reason):
    with pytest.raises(ParameterError) as exc:
        Parameters(ParametersLiteral(log_n=12, **kwargs))
    assert exc.value.reason == reason
    assert f"[{reason}]" in str(exc.value)


def test_insecure_opt_out_is_explicit():
    lit = dict(log_n=12, q_bits=(30,) * 5, t_bits=20)
    p = Parameters(ParametersLiteral(**lit, allow_insecure=True))
    assert p.insecure and p.log_qp > HE_STANDARD_128[4096]
    assert "INSECURE" in p.describe()


@pytest.mark.parametrize("log_n", [4, 8, 9], ids=lambda v: f"logN={v}")
def test_small_ring_needs_opt_out(log_n):
    with pytest.raises(ParameterError) as exc:
        Parameters(ParametersLiteral(log_n=log_n, q_bits=(20,), t_bits=12, batching=False))
    assert exc.value.reason == "insecure"
    p = Parameters(
        ParametersLiteral(log_n=log_n, q_bits=(20,), t_bits=12, batching=False, allow_insecure=True)
    )
    assert p.n == 1 << log_n


@pytest.mark.parametrize("log_n", [0, 17], ids=lambda v: f"logN={v}")
def test_ring_degree_out_of_range(log_n):
    with pytest.raises(ParameterError) as exc:
        Parameters(ParametersLiteral(log_n=log_n, q_bits=(30,), t_bits=20, allow_insecure=True))
    assert exc.value.reason == "log-n"


def test_refuses_non_literal():
    with pytest.raises(ParameterError) as exc:
        Parameters({"log_n": 12})  # type: ignore[arg-type]
    assert exc.value.reason == "type"


def test_generated_primes_are_ntt_friendly_and_largest():
    p = Parameters(ParametersLiteral(log_n=12, q_bits=(30, 29), p_bits=(30,), t_bits=20))
    assert p.q[0] == Q1 and p.q[1] == ntt_prime(29, N) and p.p == (Q2,)
    assert p.t == T


def test_fingerprint_stable_and_distinct():
    names = SECURE + TOYS
    fps = {n: preset(n).fingerprint for n in names}
    assert len(set(fps.values())) == len(names)
    for n in names:
        assert isinstance(fps[n], bytes) and len(fps[n]) == 16
        assert preset(n).fingerprint == fps[n]  # rebuilt: same bytes
    # the name is not part of the identity; the moduli are
    a = Parameters(ParametersLiteral(log_n=12, q=(Q1, Q2), t=T, name="a"))
    b = Parameters(ParametersLiteral(log_n=12, q=(Q1, Q2), t=T, name="b"))
    c = Parameters(ParametersLiteral(log_n=12, q=(Q2, Q1), t=T))
    d = Parameters(ParametersLiteral(log_n=12, q=(Q1, Q2), t=65539, batching=False))
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    # frozen known answer: catches an accidental change of the fingerprint encoding
    assert preset("TOY8").fingerprint.hex() == TOY8_FINGERPRINT


def test_literal_round_trip_rebuilds_identically():
    for n in SECURE[:3] + TOYS:
        p = preset(n)
        q = Parameters(ParametersLiteral.from_dict(p.to_literal_dict()))
        assert (q.n, q.q, q.p, q.t) == (p.n, p.q, p.p, p.t)
        assert q.fingerprint == p.fingerprint


def test_parameters_are_frozen():
    p = preset("TOY4")
    with pytest.raises(AttributeError):
        p.t = 3  # type: ignore[misc]


def test_parameters_pickle_without_cached_contexts():
    """The Context that deserialization caches on Parameters never travels with them."""
    from gpubfv.context import _context_for

    p = preset("TOY4")
    ctx = _context_for(p, "cpu")
    ctx.q_basis()
    assert _context_for(p, "cpu") is ctx  # one set of tables per (parameters, backend)
    for back in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert back.fingerprint == p.fingerprint and back.q == p.q and back.t == p.t
        assert "_contexts" not in back.__dict__
        fresh = _context_for(back, "cpu")
        assert fresh is not ctx and fresh.params is back
