"""Precomputed constants for RNS basis conversion and scale-and-round (set-up in Python ints).

The hot loops are `kernels.*.rns`; these classes hold their constant tables and call them
through the backend.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from gpubfv.ring.basis import RNSBasis
from kernels.tables import barrett_constants


def crt_centered(residues: np.ndarray, moduli: tuple[int, ...]) -> list[list[int]]:
    """(..., L, N) residues -> nested lists of centered Python integers (slow; diagnostics)."""
    res = np.asarray(residues)
    big = 1
    for q in moduli:
        big *= q
    coeffs = []
    for q in moduli:
        qs = big // q
        coeffs.append(qs * pow(qs, -1, q))
    flat = res.reshape(-1, len(moduli), res.shape[-1])
    out = []
    for poly in flat:
        vals = []
        rows = [[int(v) for v in row] for row in poly]
        for j in range(res.shape[-1]):
            x = sum(rows[i][j] * coeffs[i] for i in range(len(moduli))) % big
            vals.append(x - big if x > big // 2 else x)
        out.append(vals)
    return out


class BaseConverter:
    """Fast basis conversion from basis `src` to basis `dst`.

    exact=False: returns x + u*Q_src for a small u in [0, L_src) (Bajard et al. fast conversion).
    exact=True: subtracts round(sum y_i/q_i)*Q_src computed in float64, giving the centered
    representative exactly unless x/Q_src is within ~2^-40 of +-1/2 (HPS).
    """

    def __init__(self, src: RNSBasis, dst: RNSBasis) -> None:
        self.src, self.dst = src, dst
        xp = src.backend.xp
        big = src.product
        qin = src.moduli
        qhat = [big // q for q in qin]
        qhat_inv = np.array([pow(h % q, -1, q) for h, q in zip(qhat, qin)], dtype=np.uint32)
        self.qin = src.q
        self.qhat_inv = xp.asarray(qhat_inv)
        self.qhat_inv_mu = xp.asarray(barrett_constants(src.q_host))
        self.inv_q = xp.asarray(np.array([1.0 / q for q in qin], dtype=np.float64))
        self.qout = dst.q
        self.qout_mu = dst.mu
        self.qhat_mod = xp.asarray(
            np.array([[h % p for p in dst.moduli] for h in qhat], dtype=np.uint32)
        )
        self.q_mod = xp.asarray(np.array([big % p for p in dst.moduli], dtype=np.uint32))

    def __call__(self, x: Any, exact: bool = False) -> Any:
        """x (..., L_src, N) -> (..., L_dst, N), fast (exact=False) or exact."""
        xp = self.src.backend.xp
        flat = self.src._flat(self.src._c(x))
        out = xp.empty((flat.shape[0], len(self.dst), self.dst.n), dtype=np.uint32)
        self.src.backend.k.base_convert(flat, self, exact, out)
        return out.reshape(x.shape[:-2] + (len(self.dst), self.dst.n))


class ScaleRoundToT:
    """round(t * x / Q) mod t for x given in basis Q: BFV decryption (HPS, any t < 2^61)."""

    def __init__(self, basis: RNSBasis, t: int) -> None:
        xp = basis.backend.xp
        big = basis.product
        self.basis, self.t = basis, t
        omegas, thetas = [], []
        for q in basis.moduli:
            qs = big // q
            qt = pow(qs % q, -1, q)
            num = t * qt
            omegas.append((num // q) % t)
            thetas.append(float(Fraction(num % q, q)))
        chunks = max(1, (t.bit_length() + 15) // 16)
        omega16 = np.array(
            [[(w >> (16 * (chunks - 1 - c))) & 0xFFFF for w in omegas] for c in range(chunks)],
            dtype=np.uint64,
        )
        self.omega16 = xp.asarray(omega16)
        self.theta = xp.asarray(np.array(thetas, dtype=np.float64))

    def __call__(self, x: Any) -> Any:
        """x (..., L, N) over Q -> round(t*x/Q) mod t, uint64 (..., N)."""
        xp = self.basis.backend.xp
        flat = self.basis._flat(self.basis._c(x))
        out = xp.empty((flat.shape[0], self.basis.n), dtype=np.uint64)
        self.basis.backend.k.scale_round_to_t(flat, self, out)
        return out.reshape(x.shape[:-2] + (self.basis.n,))


class HPSScaler:
    """For x given in Q and R (|x| < QR/2): round(t * x / Q) in basis R (BFV multiplication)."""

    def __init__(self, qb: RNSBasis, rb: RNSBasis, t: int) -> None:
        xp = qb.backend.xp
        Q, R = qb.product, rb.product
        QR = Q * R
        self.qb, self.rb = qb, rb
        int_part, frac_part = [], []
        for q in qb.moduli:
            lam = pow((QR // q) % q, -1, q)
            num = t * lam * R
            int_part.append([(num // q) % r for r in rb.moduli])
            frac_part.append(float(Fraction(num % q, q)))
        own = []
        for r in rb.moduli:
            mu = pow((QR // r) % r, -1, r)
            own.append((t * mu * (R // r)) % r)
        self.qmod = qb.q
        self.rmod = rb.q
        self.rmu = rb.mu
        self.int_part = xp.asarray(np.array(int_part, dtype=np.uint32))
        self.frac_part = xp.asarray(np.array(frac_part, dtype=np.float64))
        self.own = xp.asarray(np.array(own, dtype=np.uint32))

    def __call__(self, xq: Any, xr: Any) -> Any:
        """(x over Q, x over R) -> round(t*x/Q) over R, shape of `xr`."""
        xp = self.qb.backend.xp
        fq = self.qb._flat(self.qb._c(xq))
        fr = self.rb._flat(self.rb._c(xr))
        out = xp.empty(fr.shape, dtype=np.uint32)
        self.qb.backend.k.hps_scale_to_r(fq, fr, self, out)
        return out.reshape(xr.shape)
