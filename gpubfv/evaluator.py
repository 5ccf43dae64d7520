"""Homomorphic operations on batches of ciphertexts.

Key switching is hybrid (special modulus P, RNS gadget digits): relinearization, rotations and
the multiparty key switches share `key_switch`. Multiplication is HPS: exact lift of Q to an
auxiliary basis R, tensor product in QR, scale by t/Q into R, exact extension back to Q.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpubfv.ciphertext import Ciphertext, Plaintext, check_ciphertext, check_plaintext
from gpubfv.context import Context, require_context
from gpubfv.encoder import wide_negate
from gpubfv.encryptor import add_scaled_plaintext
from gpubfv.keys import (
    GaloisKeys,
    SwitchingKey,
    galois_element_columns,
    galois_element_rows,
)


def key_switch(ctx: Context, c: Any, key_data: Any) -> Any:
    """c (..., L, N) coefficient domain -> (..., 2, L, N) with out0 + out1*s ~ c*s'.

    key_data: (D, 2, L+K, N) NTT domain over QP.
    """
    xp = ctx.backend.xp
    qp, L, K, n = ctx.qp, ctx.L, ctx.K, ctx.n
    if c.shape[-2] != L:
        raise ValueError("key switching works at the top level only")
    batch = c.shape[:-2]
    acc = xp.zeros((2,) + batch + (L + K, n), dtype=np.uint32)
    for j, (grp, (conv, rest)) in enumerate(zip(ctx.digits, ctx.digit_converters)):
        ext = xp.empty(batch + (L + K, n), dtype=np.uint32)
        cj = xp.ascontiguousarray(c[..., list(grp), :])
        ext[..., list(grp), :] = cj
        ext[..., rest, :] = conv(cj, exact=False)
        qp.ntt(ext, inplace=True)
        for comp in range(2):
            qp.mul_add(ext, key_data[j, comp], acc[comp])
    qp.intt(acc, inplace=True)
    return xp.ascontiguousarray(xp.moveaxis(mod_down(ctx, acc), 0, -3))


def mod_down(ctx: Context, x: Any) -> Any:
    """(..., L+K, N) over QP -> round(x / P) over Q (approximate P->Q conversion, +small error)."""
    L = ctx.L
    qb = ctx.q_basis()
    xq = ctx.backend.xp.ascontiguousarray(x[..., :L, :])
    xpp = ctx.backend.xp.ascontiguousarray(x[..., L:, :])
    diff = qb.sub(xq, ctx.p_to_q(xpp, exact=False))
    return qb.mul_scalar(diff, ctx.p_inv_mod_q)


class Evaluator:
    """Homomorphic operations: `Evaluator(ctx, relin_key=None, galois_keys=None)`.

    The keys are needed only by `relinearize`/`multiply` and the rotations.
    """

    def __init__(
        self,
        ctx: Context,
        relin_key: SwitchingKey | None = None,
        galois_keys: GaloisKeys | None = None,
    ) -> None:
        self.ctx = require_context(ctx, "Evaluator")
        self.params = self.ctx.params
        self.backend = self.ctx.backend
        if relin_key is not None:
            self.ctx.check(relin_key, "relinearization key")
        if galois_keys is not None:
            self.ctx.check(galois_keys, "Galois keys")
        self.rlk = relin_key
        self.gks = galois_keys

    # -- linear -----------------------------------------------------------------------------
    def _same(self, a: Ciphertext, b: Ciphertext) -> None:
        check_ciphertext(self.params, a)
        check_ciphertext(self.params, b)
        if a.level != b.level or a.size != b.size:
            raise ValueError(f"operands differ: size {a.size}/{b.size}, level {a.level}/{b.level}")

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """a + b (same size and level)."""
        self._same(a, b)
        return Ciphertext(self.params, self.ctx.q_basis(a.level).add(a.data, b.data))

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """a - b (same size and level)."""
        self._same(a, b)
        return Ciphertext(self.params, self.ctx.q_basis(a.level).sub(a.data, b.data))

    def neg(self, a: Ciphertext) -> Ciphertext:
        """-a."""
        check_ciphertext(self.params, a)
        return Ciphertext(self.params, self.ctx.q_basis(a.level).neg(a.data))

    def sum(self, cts: Ciphertext | list[Ciphertext]) -> Ciphertext:
        """Sum K ciphertexts in one pass: a list, or a batch along the first axis."""
        xp = self.backend.xp
        if isinstance(cts, list):
            if not cts:
                raise ValueError("nothing to sum")
            for c in cts:
                self._same(cts[0], c)
            data = xp.stack([c.data for c in cts])
        else:
            check_ciphertext(self.params, cts)
            if not cts.batch_shape:
                raise ValueError("sum() of one ciphertext: pass a batch or a list to sum over")
            data = cts.data
        level = data.shape[-2]
        return Ciphertext(self.params, self.ctx.q_basis(level).sum(data))

    def add_plain(self, a: Ciphertext, pt: Plaintext) -> Ciphertext:
        """a + pt (the plaintext is scaled by Q/t into c0)."""
        check_ciphertext(self.params, a)
        check_plaintext(self.params, pt)
        out = a.data.copy()
        c0 = self.backend.xp.ascontiguousarray(out[..., 0, :, :])
        add_scaled_plaintext(self.ctx, c0, pt.data)
        out[..., 0, :, :] = c0
        return Ciphertext(self.params, out)

    def sub_plain(self, a: Ciphertext, pt: Plaintext) -> Ciphertext:
        """a - pt."""
        xp = self.backend.xp
        check_plaintext(self.params, pt)
        if self.params.t_wide:
            return self.add_plain(a, Plaintext(self.params, wide_negate(pt.data, self.params, xp)))
        t = self.params.t
        neg = self.backend.xp.where(pt.data == 0, pt.data, np.uint64(t) - pt.data)
        return self.add_plain(a, Plaintext(self.params, neg))

    def mul_plain(self, a: Ciphertext, pt: Plaintext) -> Ciphertext:
        """Multiply by an (unscaled) plaintext polynomial, lifted centered mod t."""
        check_ciphertext(self.params, a)
        check_plaintext(self.params, pt)
        self._narrow_t("mul_plain")
        qb = self.ctx.q_basis(a.level)
        t = self.params.t
        m = pt.data.astype(np.int64)
        m = self.backend.xp.where(m > np.int64(t // 2), m - np.int64(t), m)
        mq = qb.ntt(qb.from_signed(m), inplace=True)
        if mq.ndim > 2:
            mq = mq[..., None, :, :]
        prod = qb.mul(qb.ntt(a.data), mq)
        return Ciphertext(self.params, qb.intt(prod, inplace=True))

    # -- multiplication -----------------------------------------------------------------------
    def _narrow_t(self, what: str) -> None:
        # HPS multiplication tables and the centered lift of a plaintext assume t < 2^61
        if self.params.t_wide:
            raise ValueError(
                f"{what} needs a prime t < 2^61; with t = 2^{self.params.t_log2} only additions, "
                "subtractions, negation, add_plain/sub_plain, rotations and modulus switching "
                "are supported"
            )

    def mul(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Tensor product (size-3 result); call `relinearize` afterwards."""
        self._same(a, b)
        self._narrow_t("mul")
        ctx = self.ctx
        if a.size != 2 or a.level != ctx.L:
            raise ValueError("mul takes fresh-size (2) ciphertexts at the top level")
        xp = self.backend.xp
        qr = ctx.qr
        L = ctx.L

        def lift(ct: Ciphertext) -> Any:
            ext = ctx.q_to_r(ct.data, exact=True)
            return qr.ntt(xp.concatenate([ct.data, ext], axis=-2), inplace=True)

        x, y = lift(a), lift(b)
        d0 = qr.mul(x[..., 0, :, :], y[..., 0, :, :])
        d1 = qr.mul(x[..., 0, :, :], y[..., 1, :, :])
        qr.mul_add(x[..., 1, :, :], y[..., 0, :, :], d1)
        d2 = qr.mul(x[..., 1, :, :], y[..., 1, :, :])
        d = qr.intt(xp.stack([d0, d1, d2], axis=-3), inplace=True)
        scaled_r = ctx.hps(xp.ascontiguousarray(d[..., :L, :]), xp.ascontiguousarray(d[..., L:, :]))
        return Ciphertext(self.params, ctx.r_to_q(scaled_r, exact=True))

    def relinearize(self, a: Ciphertext) -> Ciphertext:
        """Size-3 ciphertext -> size 2 under the relinearization key."""
        check_ciphertext(self.params, a, size=3)
        if self.rlk is None:
            raise ValueError("relinearization needs a relinearization key")
        qb = self.ctx.q_basis()
        ks = key_switch(self.ctx, a.data[..., 2, :, :], self.rlk.data)
        out = qb.add(a.data[..., :2, :, :], ks)
        return Ciphertext(self.params, out)

    def multiply(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """mul then relinearize."""
        return self.relinearize(self.mul(a, b))

    # -- automorphisms --------------------------------------------------------------------------
    def apply_galois(self, a: Ciphertext, galois: int) -> Ciphertext:
        """The automorphism X -> X^galois, key-switched back to s."""
        check_ciphertext(self.params, a, size=2)
        if self.gks is None:
            raise ValueError("rotations need Galois keys")
        key = self.gks[galois]
        qb = self.ctx.q_basis(a.level)
        rot = qb.automorphism(a.data, galois)
        ks = key_switch(self.ctx, rot[..., 1, :, :], key.data)
        ks[..., 0, :, :] = qb.add(ks[..., 0, :, :], rot[..., 0, :, :])
        return Ciphertext(self.params, ks)

    def rotate_rows(self, a: Ciphertext, steps: int) -> Ciphertext:
        """Rotate both rows of the 2 x N/2 slot matrix left by `steps`."""
        return self.apply_galois(a, galois_element_rows(self.params.n, steps))

    def rotate_columns(self, a: Ciphertext) -> Ciphertext:
        """Swap the two rows of the slot matrix."""
        return self.apply_galois(a, galois_element_columns(self.params.n))

    # -- modulus switching ----------------------------------------------------------------------
    def mod_switch_to(self, a: Ciphertext, level: int) -> Ciphertext:
        """Divide-and-round by the dropped primes (smaller on the wire; noise scales down)."""
        check_ciphertext(self.params, a)
        if not 1 <= level <= a.level:
            raise ValueError(f"cannot switch from level {a.level} to {level}")
        if self.params.q_at(level) < 8 * self.params.t:
            raise ValueError(
                f"level {level} (log2 Q={math.log2(self.params.q_at(level)):.1f}) cannot hold "
                f"plaintexts mod t of {self.params.t.bit_length()} bits"
            )
        xp = self.backend.xp
        data = a.data
        for cur in range(a.level, level, -1):
            qb = self.ctx.q_basis(cur)
            ql_mod, ql_inv = self.ctx.drop_constants(cur)
            flat = qb._flat(qb._c(data))
            out = xp.empty((flat.shape[0], cur - 1, self.params.n), dtype=np.uint32)
            self.backend.k.drop_last_limb(flat, qb.q, qb.mu, ql_mod, ql_inv, out)
            data = out.reshape(data.shape[:-2] + (cur - 1, self.params.n))
        return Ciphertext(self.params, xp.ascontiguousarray(data))
