"""Keys and key generation: ternary secret, public key, switching keys (relinearization, Galois).

Layouts (NTT domain, batch-free):
- SecretKey.data: (L+K, N) over QP (Q primes first, then P).
- PublicKey.data: (2, L, N) over Q: (-a*s + e, a).
- SwitchingKey.data: (D, 2, L+K, N) over QP, one (b_j, a_j) per gadget digit j, with
  b_j = -a_j*s + e_j + P*[Q/D_j]*[(Q/D_j)^-1]_{D_j} * s'  (hybrid key switching, digits = groups
  of len(P) primes). The a_j are expanded from a public seed, which is what travels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpubfv.context import Context, require_context
from gpubfv.params import Parameters
from gpubfv.ring.sampling import PRNG, expand_uniform


@dataclass(eq=False)
class SecretKey:
    """Ternary secret s, NTT domain over QP: data (L+K, N)."""

    params: Parameters
    data: Any  # (L+K, N) NTT domain over QP

    def q_part(self, level: int) -> Any:
        """s over the first `level` ciphertext primes (a view)."""
        return self.data[:level]


@dataclass(eq=False)
class PublicKey:
    """(-a*s + e, a) over Q, NTT domain: data (2, L, N); `a` expands from `seed`."""

    params: Parameters
    data: Any  # (2, L, N) NTT domain over Q
    seed: bytes | None = None


@dataclass(eq=False)
class SwitchingKey:
    """Hybrid key-switching key from s' to s (relinearization: s' = s^2; Galois: s(X^g))."""

    params: Parameters
    data: Any  # (D, 2, L+K, N) NTT domain over QP
    seed: bytes | None = None
    galois: int = 0  # 0 for a relinearization key
    label: str = ""  # domain label of the a_j expanded from `seed` (see crp_switching)


@dataclass(eq=False)
class GaloisKeys:
    """Switching keys indexed by Galois element."""

    params: Parameters
    keys: dict[int, SwitchingKey] = field(default_factory=dict)

    def __getitem__(self, g: int) -> SwitchingKey:
        """The key for Galois element `g` (KeyError with a hint if it was not generated)."""
        try:
            return self.keys[g]
        except KeyError:
            raise KeyError(f"no Galois key for element {g}; generate it first") from None


def galois_element_rows(n: int, steps: int) -> int:
    """Galois element rotating both rows left by `steps` (3 generates the row group)."""
    return pow(3, steps % (n // 2), 2 * n)


def galois_element_columns(n: int) -> int:
    """Galois element swapping the two rows of the slot matrix (X -> X^(2N-1))."""
    return 2 * n - 1


def gadget_add(ctx: Context, b: Any, s_prime_ntt: Any) -> None:
    """b[j] += P * s' on the Q limbs of digit j (the CRT gadget vector), in place."""
    qp = ctx.qp
    for j, grp in enumerate(ctx.digits):
        scalars = [ctx.params.big_p if i in grp else 0 for i in range(len(qp))]
        b[j] = qp.add(b[j], qp.mul_scalar(s_prime_ntt, scalars))


def switching_key_body(
    ctx: Context, s_ntt: Any, s_prime_ntt: Any, a: Any, prng: PRNG, with_gadget: bool = True
) -> Any:
    """b = -a*s + e (+ gadget(s')) for every digit: (D, L+K, N), NTT domain over QP."""
    qp = ctx.qp
    D = len(ctx.digits)
    e = qp.from_signed(prng.cbd((D, ctx.n)))
    qp.ntt(e, inplace=True)
    b = qp.sub(e, qp.mul(a, s_ntt))
    if with_gadget:
        gadget_add(ctx, b, s_prime_ntt)
    return b


def crp_switching(ctx: Context, seed: bytes, label: str) -> Any:
    """The public uniform a_j of a switching key, (D, L+K, N), from its seed."""
    return expand_uniform(seed, f"swk/{label}", ctx.qp, (len(ctx.digits),))


def crp_public_key(ctx: Context, seed: bytes) -> Any:
    """The public uniform `a` of a public key, (L, N) NTT domain over Q, from its seed."""
    return expand_uniform(seed, "pk", ctx.q_basis())


class KeyGenerator:
    """Single-key generation (the multiparty versions live in gpubfv.mhe).

    `KeyGenerator(ctx, prng=None)`: secrets and noise come from `prng` (a fresh OS-seeded
    ChaCha20 PRNG by default).
    """

    def __init__(self, ctx: Context, prng: PRNG | None = None) -> None:
        self.ctx = require_context(ctx, "KeyGenerator")
        if prng is not None and not isinstance(prng, PRNG):
            raise TypeError(
                f"KeyGenerator(ctx, prng): prng must be a PRNG, got {type(prng).__name__}"
            )
        self.params = self.ctx.params
        self.backend = self.ctx.backend
        self.prng = prng or PRNG(backend=self.backend)

    def gen_secret_key(self) -> SecretKey:
        """A fresh ternary secret key."""
        ctx = self.ctx
        s = ctx.qp.from_signed(self.prng.ternary((ctx.n,)))
        return SecretKey(self.params, ctx.qp.ntt(s, inplace=True))

    def gen_public_key(self, sk: SecretKey, seed: bytes | None = None) -> PublicKey:
        """pk = (-a*s + e, a) with `a` expanded from `seed` (fresh by default)."""
        self.ctx.check(sk, "secret key")
        ctx = self.ctx
        seed = seed or self.prng.seed()
        a = crp_public_key(ctx, seed)
        qb = ctx.q_basis()
        e = qb.ntt(qb.from_signed(self.prng.cbd((ctx.n,))), inplace=True)
        b = qb.sub(e, qb.mul(a, sk.q_part(ctx.L)))
        return PublicKey(self.params, self.backend.xp.stack([b, a]), seed)

    def _switching_key(
        self, sk: SecretKey, s_prime_ntt: Any, label: str, galois: int
    ) -> SwitchingKey:
        ctx = self.ctx
        seed = self.prng.seed()
        a = crp_switching(ctx, seed, label)
        b = switching_key_body(ctx, sk.data, s_prime_ntt, a, self.prng)
        data = self.backend.xp.stack([b, a], axis=1)
        return SwitchingKey(self.params, data, seed, galois, label)

    def gen_relin_key(self, sk: SecretKey) -> SwitchingKey:
        """The relinearization key (switching s^2 -> s)."""
        self.ctx.check(sk, "secret key")
        s2 = self.ctx.qp.mul(sk.data, sk.data)
        return self._switching_key(sk, s2, "relin", 0)

    def gen_galois_key(self, sk: SecretKey, galois: int) -> SwitchingKey:
        """The switching key for the automorphism X -> X^galois."""
        self.ctx.check(sk, "secret key")
        qp = self.ctx.qp
        s = qp.intt(sk.data)
        s_g = qp.ntt(qp.automorphism(s, galois), inplace=True)
        return self._switching_key(sk, s_g, f"galois/{galois}", galois)

    def gen_galois_keys(
        self, sk: SecretKey, steps: list[int] | None = None, columns: bool = True
    ) -> GaloisKeys:
        """Keys for row rotations by `steps` (default: powers of two) and the column swap."""
        n = self.params.n
        if steps is None:
            steps = [1 << i for i in range(max(0, n.bit_length() - 2))]
            steps += [-s for s in steps]
        elems = {galois_element_rows(n, s) for s in steps}
        if columns:
            elems.add(galois_element_columns(n))
        return GaloisKeys(self.params, {g: self.gen_galois_key(sk, g) for g in sorted(elems)})
