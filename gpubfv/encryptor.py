"""Encryption (public or secret key) and decryption, batched."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.ciphertext import Ciphertext, Plaintext
from gpubfv.context import Context, get_context
from gpubfv.keys import PublicKey, SecretKey
from gpubfv.params import Parameters
from gpubfv.ring.rns import crt_centered
from gpubfv.ring.sampling import PRNG, expand_uniform


def add_scaled_plaintext(ctx: Context, c0: Any, m: Any) -> None:
    """c0 (..., level, N) += round(Q_level * m / t), in place."""
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


def _check_plain(params: Parameters, pt: Plaintext) -> None:
    if not isinstance(pt, Plaintext) or pt.params.fingerprint != params.fingerprint:
        raise ValueError("plaintext belongs to other parameters")
    if pt.data.dtype != np.uint64 or pt.data.shape[-1] != params.n:
        raise ValueError("malformed plaintext data")


class Encryptor:
    """Encrypt under a public key (default) or a secret key (seeded c1, smaller on the wire)."""

    def __init__(
        self,
        params: Parameters,
        public_key: PublicKey | None = None,
        secret_key: SecretKey | None = None,
        backend: Backend | None = None,
        prng: PRNG | None = None,
    ) -> None:
        if public_key is None and secret_key is None:
            raise ValueError("Encryptor needs a public key or a secret key")
        self.params = params
        self.backend = backend or get_backend("cpu")
        self.ctx = get_context(params, self.backend)
        self.pk, self.sk = public_key, secret_key
        self.prng = prng or PRNG(backend=self.backend)

    def encrypt(self, pt: Plaintext) -> Ciphertext:
        _check_plain(self.params, pt)
        if self.pk is None:
            return self.encrypt_symmetric(pt)
        return self.encrypt_zero_pk(pt.batch_shape, pt.data)

    def encrypt_zero_pk(self, batch: tuple[int, ...], m: Any = None) -> Ciphertext:
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
    def __init__(
        self, params: Parameters, secret_key: SecretKey, backend: Backend | None = None
    ) -> None:
        self.params = params
        self.backend = backend or get_backend("cpu")
        self.ctx = get_context(params, self.backend)
        self.sk = secret_key

    def decrypt(self, ct: Ciphertext) -> Plaintext:
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
    worst = invariant_noise_max(ctx, ct, sk)
    big = ctx.params.q_at(ct.level)
    return max(0.0, math.log2(big / 2) - math.log2(max(worst, 1)))


def check_ciphertext(params: Parameters, ct: Ciphertext, size: int | None = None) -> None:
    if not isinstance(ct, Ciphertext):
        raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
    if ct.params.fingerprint != params.fingerprint:
        raise ValueError("ciphertext belongs to other parameters")
    if ct.data.dtype != np.uint32 or ct.data.ndim < 3 or ct.data.shape[-1] != params.n:
        raise ValueError("malformed ciphertext data")
    if not 1 <= ct.level <= len(params.q) or ct.size not in (2, 3):
        raise ValueError(f"ciphertext of size {ct.size} at level {ct.level} is not valid here")
    if size is not None and ct.size != size:
        raise ValueError(f"expected a ciphertext of size {size}, got {ct.size}")
