"""t-out-of-K threshold keys: Shamir sharing of each s_i, Lagrange re-combination per RNS limb.

Peer i shares its s_i with a random polynomial f_i of degree t-1 (f_i(0) = s_i, coefficients
uniform in R_QP) and sends f_i(x_j) to peer j over a private channel. Peer j's threshold share
is F(x_j) = sum_i f_i(x_j). For an active set A of exactly t peers, peer j's additive share is
lambda_j * F(x_j) with lambda_j = prod_{k in A, k != j} x_k / (x_k - x_j) (mod every prime), and
sum_{j in A} lambda_j F(x_j) = F(0) = s: every protocol of `gpubfv.mhe` then runs unchanged on
those additive shares. Fewer than t shares determine nothing about s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpubfv.context import Context, require_context
from gpubfv.keys import SecretKey
from gpubfv.params import Parameters
from gpubfv.ring.sampling import PRNG


class ThresholdError(ValueError):
    """Bad threshold set-up: points, threshold, active set, or mixed-up Shamir shares."""


@dataclass(eq=False)
class ShamirShare:
    """f_i(x_j): secret, sent from `sender` to the peer at `point` over a private channel."""

    params: Parameters
    sender: int
    point: int
    data: Any  # (L+K, N) NTT domain over QP


@dataclass(eq=False)
class ThresholdSecretShare:
    """F(x_j) = sum over senders of f_i(x_j): peer j's long-term threshold share."""

    params: Parameters
    point: int
    senders: frozenset[int]
    data: Any


class Thresholdizer:
    """t-out-of-K set-up over `points` (one distinct evaluation point per peer)."""

    def __init__(self, ctx: Context, threshold: int, points: Sequence[int]) -> None:
        ctx = require_context(ctx, type(self).__name__)
        self.ctx = ctx
        self.params = params = ctx.params
        self.backend = ctx.backend
        self.points = [int(x) for x in points]
        self.threshold = threshold
        k = len(self.points)
        if not 1 <= threshold <= k:
            raise ThresholdError(f"threshold {threshold} outside 1..{k}")
        if len(set(self.points)) != k:
            raise ThresholdError("evaluation points must be distinct")
        smallest = min(params.q + params.p)
        for x in self.points:
            if not 0 < x < smallest:
                raise ThresholdError(f"evaluation point {x} must lie in 1..{smallest - 1}")
        # distinct points below every prime: all differences are non-zero mod each prime, hence
        # invertible (the primes are prime).

    def gen_shares(self, sk: SecretKey, sender: int, prng: PRNG | None = None) -> list[ShamirShare]:
        """f_i(x_j) for every point, f_i(0) = s_i, random degree threshold-1 coefficients."""
        rng = prng or PRNG(backend=self.backend)
        qp = self.ctx.qp
        coeffs = [rng.uniform(qp) for _ in range(self.threshold - 1)]
        out = []
        for x in self.points:
            acc = qp.zeros()
            for c in reversed(coeffs):  # Horner: ((c_{t-1} x + c_{t-2}) x + ...) x + s
                qp.add(acc, c, out=acc)
                acc = qp.mul_scalar(acc, [x] * len(qp))
            qp.add(acc, sk.data, out=acc)
            out.append(ShamirShare(self.params, sender, x, acc))
        return out

    def aggregate(self, shares: Iterable[ShamirShare], point: int) -> ThresholdSecretShare:
        """Peer `point`'s long-term share F(x_j) from the Shamir shares every peer sent it."""
        qp = self.ctx.qp
        acc = qp.zeros()
        senders: set[int] = set()
        for sh in shares:
            if sh.point != point:
                raise ThresholdError(f"share for point {sh.point} given to point {point}")
            if sh.sender in senders:
                raise ThresholdError(f"two shares from sender {sh.sender}")
            if sh.params.fingerprint != self.params.fingerprint:
                raise ThresholdError("share from other parameters")
            senders.add(sh.sender)
            qp.add(acc, sh.data, out=acc)
        return ThresholdSecretShare(self.params, point, frozenset(senders), acc)

    def lagrange_coefficients(self, point: int, active: Sequence[int]) -> list[int]:
        """lambda_point for the active set, one residue per QP prime."""
        out = []
        for q in self.params.q + self.params.p:
            num, den = 1, 1
            for x in active:
                if x != point:
                    num = num * x % q
                    den = den * (x - point) % q
            out.append(num * pow(den, -1, q) % q)
        return out

    def additive_share(
        self, tsk: ThresholdSecretShare, active: Sequence[int], force: bool = False
    ) -> SecretKey:
        """Peer `tsk.point`'s additive share of s for the fixed active set.

        The set must hold exactly `threshold` known points including this peer; `force=True`
        skips the size check (only to demonstrate in tests that t-1 shares give a wrong key).
        """
        active = sorted(int(x) for x in active)
        if len(set(active)) != len(active):
            raise ThresholdError("active set has repeated points")
        unknown = set(active) - set(self.points)
        if unknown:
            raise ThresholdError(f"active set names unknown points {sorted(unknown)}")
        if tsk.point not in active:
            raise ThresholdError(f"peer at point {tsk.point} is not in the active set")
        if len(active) != self.threshold and not force:
            raise ThresholdError(
                f"active set of {len(active)} peers; exactly {self.threshold} are needed"
            )
        lam = self.lagrange_coefficients(tsk.point, active)
        return SecretKey(self.params, self.ctx.qp.mul_scalar(tsk.data, lam))
