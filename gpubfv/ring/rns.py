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
    """round(t * x / Q) mod t for x given in basis Q: BFV decryption (HPS).

    Any prime t < 2^61: output uint64 (..., N). Wide t = 2^k (62 <= k <= 256): output uint32
    (..., W, N), W = ceil(k/32) little-endian words, computed exactly as follows.

    With Qt_i = [(Q/q_i)^-1]_{q_i}, the CRT gives x = sum_i x_i Qt_i (Q/q_i) - v Q for an
    integer v, so t x / Q = sum_i x_i (omega_i + theta_i) - v t, where omega_i + theta_i =
    t Qt_i / q_i, omega_i = floor(t Qt_i / q_i) mod t (an integer, W words) and theta_i =
    [t Qt_i]_{q_i} / q_i in [0, 1). Mod t the term v t vanishes, hence

        round(t x / Q) mod t = (sum_i x_i omega_i + round(F)) mod t,  F = sum_i x_i theta_i,

    where the first sum is exact integer arithmetic in words (kernels.*.widet) and only F is a
    float64 sum. Error bound of the float part: theta_i is stored correctly rounded
    (|err| <= u theta_i, u = 2^-53); x_i < 2^30 is exact; the L products and the L additions
    (the last one adds 0.5) each round once, so by the standard summation bound
    |fl(F + 1/2) - (F + 1/2)| <= (L u + gamma_{L+1}) (S + 1/2) with S = sum_i x_i theta_i < L 2^30
    and gamma_n = n u / (1 - n u); for L <= 2^10 this is at most
    EPS(L) = 2 (L + 1)^2 2^-23. Since F and t x / Q differ by an integer, floor(fl(F + 1/2)) =
    round(t x / Q) whenever t x / Q is farther than EPS(L) from a half-integer. For a BFV
    phase x = Q m / t + E this holds when |E| < (Q / 2t)(1 - 2 EPS(L)): the noise margin shrinks
    by the factor (1 - 2 EPS(L)), i.e. by -log2(1 - 2 EPS) < 3 EPS bits (< 2^-13 bits at L = 30).
    The same argument covers the prime-t path (16-bit chunks of omega instead of words).
    """

    def __init__(self, basis: RNSBasis, t: int) -> None:
        xp = basis.backend.xp
        big = basis.product
        self.basis, self.t = basis, t
        self.wide = t >= 1 << 61  # t = 2^k, k > 61 (Parameters.t_wide)
        omegas, thetas = [], []
        for q in basis.moduli:
            qs = big // q
            qt = pow(qs % q, -1, q)
            num = t * qt
            omegas.append((num // q) % t)
            thetas.append(float(Fraction(num % q, q)))
        self.theta = xp.asarray(np.array(thetas, dtype=np.float64))
        if self.wide:
            k = t.bit_length() - 1
            words = -(-k // 32)
            self.words, self.top_mask = words, (1 << (k - 32 * (words - 1))) - 1
            self.omega32 = xp.asarray(
                np.array(
                    [[(w >> (32 * c)) & 0xFFFFFFFF for w in omegas] for c in range(words)],
                    dtype=np.uint32,
                )
            )
            return
        chunks = max(1, (t.bit_length() + 15) // 16)
        omega16 = np.array(
            [[(w >> (16 * (chunks - 1 - c))) & 0xFFFF for w in omegas] for c in range(chunks)],
            dtype=np.uint64,
        )
        self.omega16 = xp.asarray(omega16)

    def __call__(self, x: Any) -> Any:
        """x (..., L, M) over Q -> round(t*x/Q) mod t: uint64 (..., M), or wide (..., W, M).

        The map is coefficient-wise, so M is N for whole polynomials or any count of
        coefficient positions (a slice of a batch: `gpubfv.mhe.compressed.open_positions`)."""
        be = self.basis.backend
        limbs, m = x.shape[-2:]
        if limbs != len(self.basis.moduli):
            raise ValueError(f"residues of shape {x.shape} for a basis of {len(self.basis)} limbs")
        flat = self.basis._c(x).reshape(-1, limbs, m)
        if self.wide:
            out = be.xp.empty((flat.shape[0], self.words, m), dtype=np.uint32)
            be.widet.wide_scale_round(flat, self, out)
            return out.reshape(x.shape[:-2] + (self.words, m))
        out = be.xp.empty((flat.shape[0], m), dtype=np.uint64)
        be.k.scale_round_to_t(flat, self, out)
        return out.reshape(x.shape[:-2] + (m,))


def float_rounding_slack(levels: int) -> float:
    """EPS(L) of `ScaleRoundToT`: the float part's worst-case error, 2 (L + 1)^2 2^-23."""
    if not 1 <= levels <= 1 << 10:
        raise ValueError(f"the bound is stated for 1 <= L <= 1024, not {levels}")
    return 2.0 * (levels + 1) ** 2 * 2.0**-23


class WidePlainScaling:
    """Constants of acc += round(Q m / t) in basis Q for t = 2^k (62 <= k <= 256).

    round(Q m / t) = (Q m - c) / t with c = [Q m]_t centered in (-t/2, t/2], hence mod q_i it is
    -c t^-1 (Q = 0 mod q_i), and c needs only w = [(Q mod t) m]_t, a truncated W-word product.
    This is the exact scaling: Q m / t + eps with |eps| <= 1/2, whatever t. The textbook
    Delta m = floor(Q/t) m would add (Q mod t) m / t, up to t - 1: for a wide t that term,
    not the encryption noise, would fill the budget (Q is only a few bits above t). With the
    exact form a sum of K encryptions carries K rounding terms of at most 1/2 each, and a sum
    of plaintexts that wraps mod t costs nothing: sum_j round(Q m_j / t) = Q (sum_j m_j mod t)
    / t + Q w + sum_j eps_j, and Q w = 0 mod Q.
    """

    def __init__(self, basis: RNSBasis, t: int) -> None:
        k = t.bit_length() - 1
        if t != 1 << k or k <= 61:
            raise ValueError(f"WidePlainScaling needs t = 2^k with k > 61, got {t}")
        words = -(-k // 32)
        xp = basis.backend.xp
        r_t = basis.product % t
        self.basis, self.t, self.words = basis, t, words
        self.top_mask = (1 << (k - 32 * (words - 1))) - 1
        self.hbit = (k - 1) - 32 * (words - 1)  # bit k-1 within the top word
        mods = basis.moduli
        self.rt = xp.asarray(
            np.array([(r_t >> (32 * c)) & 0xFFFFFFFF for c in range(words)], dtype=np.uint32)
        )
        self.tmod = xp.asarray(np.array([t % q for q in mods], dtype=np.uint32))
        self.tinv = xp.asarray(np.array([pow(t % q, -1, q) for q in mods], dtype=np.uint32))
        self.pw = xp.asarray(
            np.array([[pow(2, 32 * c, q) for c in range(words)] for q in mods], dtype=np.uint32)
        )
        self.q = basis.q

    def __call__(self, m: Any, acc: Any) -> None:
        """acc (M, L, N) += round(Q m / t), m (M, W, N) uint32 words, in place."""
        self.basis.backend.widet.wide_add_scaled_plain(m, self, acc)


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
