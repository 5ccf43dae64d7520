"""Encryption (public or secret key) and decryption, batched."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpubfv.ciphertext import Ciphertext, Plaintext, check_ciphertext, check_plaintext
from gpubfv.context import Context, require_context
from gpubfv.keys import PublicKey, SecretKey
from gpubfv.ring.rns import WidePlainScaling, crt_centered
from gpubfv.ring.sampling import PRNG, expand_uniform


def add_scaled_plaintext(ctx: Context, c0: Any, m: Any) -> None:
    """c0 (..., level, N) += round(Q_level * m / t), in place.

    `m` is plaintext data: uint64 (..., N), or for a wide t = 2^k uint32 words (..., W, N)
    (see `gpubfv.ring.rns.WidePlainScaling` for the exact scaling and its noise term, |eps| <=
    1/2 per encryption)."""
    if ctx.params.t_wide:
        _add_scaled_wide(ctx, c0, m)
        return
    level = c0.shape[-2]
    t, r_t, tinv = ctx.plain_scaling(level)
    qb = ctx.q_basis(level)
    flat_m = m.reshape(-1, ctx.n)
    if flat_m.shape[0] not in (1, qb._flat(c0).shape[0]):
        raise ValueError("plaintext batch does not match ciphertext batch")
    flat_c = qb._flat(c0)
    if flat_m.shape[0] != flat_c.shape[0]:
        flat_m = ctx.backend.xp.ascontiguousarray(
            ctx.backend.xp.broadcast_to(flat_m, (flat_c.shape[0], ctx.n))
        )
    ctx.backend.k.add_scaled_plain(
        ctx.backend.xp.ascontiguousarray(flat_m), t, r_t, tinv, qb.q, qb.mu, flat_c
    )


def _add_scaled_wide(ctx: Context, c0: Any, m: Any) -> None:
    level = c0.shape[-2]
    qb = ctx.q_basis(level)
    # per-level constants, kept with the Context's other per-level tables
    scaling = ctx._memo(("wide-plain", level), lambda: WidePlainScaling(qb, ctx.params.t))
    xp = ctx.backend.xp
    w = ctx.params.t_words
    flat_m = m.reshape(-1, w, ctx.n)
    flat_c = qb._flat(c0)
    if flat_m.shape[0] not in (1, flat_c.shape[0]):
        raise ValueError("plaintext batch does not match ciphertext batch")
    if flat_m.shape[0] != flat_c.shape[0]:
        flat_m = xp.broadcast_to(flat_m, (flat_c.shape[0], w, ctx.n))
    scaling(xp.ascontiguousarray(flat_m), flat_c)


class Encryptor:
    """Encrypt under a public key, or under a secret key (seeded c1, smaller on the wire).

    `Encryptor(ctx, key, prng=None)` with `key` a `PublicKey` or a `SecretKey`: `encrypt` is
    then public-key or secret-key (seeded) encryption.
    """

    def __init__(
        self, ctx: Context, key: PublicKey | SecretKey, *, prng: PRNG | None = None
    ) -> None:
        self.ctx = require_context(ctx, "Encryptor")
        self.params = self.ctx.params
        self.backend = self.ctx.backend
        self.pk: PublicKey | None = None
        self.sk: SecretKey | None = None
        if isinstance(key, PublicKey):
            self.ctx.check(key, "public key")
            self.pk = key
        elif isinstance(key, SecretKey):
            self.ctx.check(key, "secret key")
            self.sk = key
        else:
            raise TypeError(f"expected a PublicKey or a SecretKey, got {type(key).__name__}")
        if prng is not None and not isinstance(prng, PRNG):
            raise TypeError(f"prng must be a PRNG, got {type(prng).__name__}")
        self.prng = prng or PRNG(backend=self.backend)

    def encrypt(self, pt: Plaintext) -> Ciphertext:
        """Encrypt a plaintext (or a batch: one ciphertext per leading index)."""
        check_plaintext(self.params, pt)
        if self.pk is None:
            return self.encrypt_symmetric(pt)
        return self.encrypt_zero_pk(pt.batch_shape, pt.data)

    def encrypt_zero_pk(self, batch: tuple[int, ...], m: Any = None) -> Ciphertext:
        """Public-key encryptions of zero of shape `batch`, plus round(Q*m/t) when `m` is given."""
        if self.pk is None:
            raise ValueError("public-key encryption needs a public key")
        ctx, qb, xp = self.ctx, self.ctx.q_basis(), self.backend.xp
        n = ctx.n
        u = qb.ntt(qb.from_signed(self.prng.ternary(batch + (n,))), inplace=True)
        ct = xp.empty(batch + (2, ctx.L, n), dtype=np.uint32)
        pk = self.pk.data
        ct[..., 0, :, :] = qb.mul(u, pk[0])
        ct[..., 1, :, :] = qb.mul(u, pk[1])
        qb.intt(ct, inplace=True)
        e = qb.from_signed(self.prng.cbd(batch + (2, n)))
        qb.add(ct, e, out=ct)
        if m is not None:
            c0 = xp.ascontiguousarray(ct[..., 0, :, :])
            add_scaled_plaintext(ctx, c0, m)
            ct[..., 0, :, :] = c0
        return Ciphertext(self.params, ct)

    def encrypt_symmetric(self, pt: Plaintext) -> Ciphertext:
        """Secret-key encryption: c1 is expanded from a fresh seed that the ciphertext keeps."""
        check_plaintext(self.params, pt)
        if self.sk is None:
            raise ValueError("secret-key encryption needs a secret key")
        ctx, qb, xp = self.ctx, self.ctx.q_basis(), self.backend.xp
        batch = pt.batch_shape
        seed = self.prng.seed()
        a = expand_uniform(seed, "ct-sk", qb, batch)  # NTT domain
        c0 = qb.intt(qb.neg(qb.mul(a, self.sk.q_part(ctx.L))), inplace=True)
        qb.add(c0, qb.from_signed(self.prng.cbd(batch + (ctx.n,))), out=c0)
        add_scaled_plaintext(ctx, c0, pt.data)
        c1 = qb.intt(a)
        return Ciphertext(self.params, xp.stack([c0, c1], axis=-3), seed=seed, seed_domain="ct-sk")


def phase(ctx: Context, ct: Ciphertext, sk: SecretKey) -> Any:
    """c0 + c1*s (+ c2*s^2) mod Q_level, coefficient domain, shape (..., level, N)."""
    level = ct.level
    qb = ctx.q_basis(level)
    s = sk.q_part(level)
    acc = qb.ntt(ct.data[..., ct.size - 1, :, :])
    for i in range(ct.size - 2, -1, -1):
        acc = qb.mul(acc, s)
        tmp = qb.ntt(ct.data[..., i, :, :]) if i > 0 else None
        if tmp is not None:
            qb.add(acc, tmp, out=acc)
    qb.intt(acc, inplace=True)
    return qb.add(acc, ct.data[..., 0, :, :])


class Decryptor:
    """Decrypt with a secret key: `Decryptor(ctx, sk)`."""

    def __init__(self, ctx: Context, secret_key: SecretKey) -> None:
        self.ctx = require_context(ctx, "Decryptor")
        self.params = self.ctx.params
        self.backend = self.ctx.backend
        self.ctx.check(secret_key, "secret key")
        self.sk = secret_key

    def decrypt(self, ct: Ciphertext) -> Plaintext:
        """round(t/Q * (c0 + c1*s + ...)) mod t, at the ciphertext's level (wide t = 2^k: exact,
        as uint32 words; see `gpubfv.ring.rns.ScaleRoundToT`)."""
        check_ciphertext(self.params, ct)
        x = phase(self.ctx, ct, self.sk)
        return Plaintext(self.params, self.ctx.decrypt_scaler(ct.level)(x))

    def noise_budget(self, ct: Ciphertext) -> float:
        """Invariant-noise budget in bits: log2(Q/2) - log2(max|[t*phase]_Q|); > 0 decrypts."""
        return noise_budget(self.ctx, ct, self.sk)


def invariant_noise_max(ctx: Context, ct: Ciphertext, sk: SecretKey) -> int:
    """max |[t * (c0 + c1 s + ...)]_Q| over coefficients, with Python integers (diagnostic)."""
    moduli = ctx.params.q[: ct.level]
    big = math.prod(moduli)
    t = ctx.params.t
    worst = 0
    for poly in crt_centered(ctx.backend.to_numpy(phase(ctx, ct, sk)), moduli):
        for x in poly:
            v = x * t % big
            worst = max(worst, big - v if v > big // 2 else v)
    return worst


def noise_budget(ctx: Context, ct: Ciphertext, sk: SecretKey) -> float:
    """Invariant-noise budget of `ct` in bits (see `Decryptor.noise_budget`)."""
    worst = invariant_noise_max(ctx, ct, sk)
    big = ctx.params.q_at(ct.level)
    return max(0.0, math.log2(big / 2) - math.log2(max(worst, 1)))


__all__ = [
    "Decryptor",
    "Encryptor",
    "add_scaled_plaintext",
    "invariant_noise_max",
    "noise_budget",
    "phase",
]
