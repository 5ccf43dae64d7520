"""The distributed discrete Gaussian mechanism (Kairouz, Liu and Steinke, ICML 2021) in the
integer domain, for aggregation under encryption.

Per peer and round: the L2-clipped update (norm <= c) is rotated (:mod:`dmhe.privacy.rotation`,
signs from the round's public seed), scaled by ``2^b / c`` (so the clip norm is ``2^b`` integer
units), rounded by conditional randomized rounding to squared norm at most ``D2^2`` (KLS's bound
with failure parameter beta, enforced by retrying), and the peer adds ``pieces`` independent
N_Z(0, s) vectors drawn by the exact sampler from the CSPRNG. The K peers' integer vectors are
summed exactly (encrypted, or in the clear in the reference mode); the sum holds ``K * pieces``
discrete Gaussians of parameter s, which :func:`dmhe.privacy.accounting.ddg_epsilon` accounts.
The average is rotated back and rescaled after the sum.

Each peer adds 1/K of the noise, so the guarantee needs the honest peers' shares: with c peers
withholding theirs (dropouts, colluders) the sum holds ``(K - c) * pieces`` components, and
:meth:`DistributedDiscreteGaussian.epsilon` reports that eps for any c.

A round can be refused (never answered with a weaker vector): when the rounding exceeds
``max_tries`` retries (probability ``beta^max_tries``) or the sampler leaves its exact range
(< e^-64 per draw). Those probabilities, over every peer and round, are subtracted from delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dmhe.privacy.accounting import ddg_epsilon
from dmhe.privacy.discrete_gaussian import MAX_VARIANCE, discrete_gaussian
from dmhe.privacy.random import RandomBits
from dmhe.privacy.rotation import (
    conditional_round,
    next_pow2,
    rotate,
    rotation_signs,
    rounding_norm_bound_sq,
    unrotate,
)

__all__ = ["DistributedDiscreteGaussian", "TAIL_Z"]

#: tail bound of the summed noise in standard deviations, for the modular headroom: a
#: sub-Gaussian coordinate exceeds it with probability < 2 exp(-72) ~ 1e-31
TAIL_Z = 12.0


def _realize(per_peer_variance: float) -> tuple[int, int]:
    """``(pieces, s)``: the fewest integer-variance components whose sum reaches the variance."""
    pieces = max(1, math.ceil(per_peer_variance / MAX_VARIANCE))
    return pieces, max(1, math.ceil(per_peer_variance / pieces))


@dataclass(frozen=True)
class DistributedDiscreteGaussian:
    """Mechanism settings (see the module docstring); build with :meth:`calibrate`."""

    peers: int
    clip: float
    dim: int
    norm_bits: int
    variance: int
    pieces: int = 1
    beta: float = math.exp(-0.5)
    max_tries: int = 100
    rotation_seed: bytes = field(default=b"dmhe-ddg", repr=False)
    name: str = "distributed discrete Gaussian"

    @property
    def padded(self) -> int:
        """Coordinates on the wire: the next power of two of ``dim``."""
        return next_pow2(self.dim)

    @property
    def bound_sq(self) -> int:
        """The enforced bound on a rounded vector's squared norm (integer units)."""
        return math.floor(rounding_norm_bound_sq(2.0**self.norm_bits, self.padded, self.beta))

    @property
    def l2(self) -> float:
        """L2 sensitivity of the integer sum to one peer (add/remove), integer units."""
        return math.sqrt(self.bound_sq)

    @classmethod
    def default_norm_bits(cls, dim: int) -> int:
        """Clip norm ``2^b`` >= 8 sqrt(d): rounding adds < 1% to the sensitivity's square."""
        return max(4, math.ceil(math.log2(8.0 * math.sqrt(next_pow2(dim)))))

    @classmethod
    def calibrate(
        cls,
        *,
        peers: int,
        clip: float,
        dim: int,
        rounds: int,
        delta: float,
        epsilon: float | None = None,
        noise_multiplier: float | None = None,
        norm_bits: int | None = None,
        rotation_seed: bytes = b"dmhe-ddg",
    ) -> DistributedDiscreteGaussian:
        """The least noise meeting ``epsilon`` after ``rounds`` (or, with ``noise_multiplier``
        z, summed noise of standard deviation z * D2)."""
        if (epsilon is None) == (noise_multiplier is None):
            raise ValueError("give exactly one of epsilon or noise_multiplier")
        bits = cls.default_norm_bits(dim) if norm_bits is None else int(norm_bits)
        base = cls(peers, clip, dim, bits, 1, 1, rotation_seed=rotation_seed)
        if noise_multiplier is not None:
            if noise_multiplier <= 0:
                raise ValueError("noise_multiplier must be positive")
            pieces, s = _realize((noise_multiplier * base.l2) ** 2 / peers)
            return cls(peers, clip, dim, bits, s, pieces, rotation_seed=rotation_seed)
        assert epsilon is not None
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")

        def build(v: float) -> DistributedDiscreteGaussian:
            pieces, s = _realize(v)
            return cls(peers, clip, dim, bits, s, pieces, rotation_seed=rotation_seed)

        lo, hi = 0.0, max(1.0, base.l2**2 / peers)
        while build(hi).epsilon(delta, rounds) > epsilon:
            lo, hi = hi, hi * 4
            if hi > 1e30:
                raise ValueError(f"no noise level reaches epsilon={epsilon}")
        for _ in range(60):
            mid = (lo + hi) / 2
            if build(mid).epsilon(delta, rounds) > epsilon:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-6 * hi:
                break
        return build(hi)

    # -- the peer's side -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, *, round_index: int, bits: RandomBits) -> torch.Tensor:
        """Rotate, scale, round and noise one L2-clipped update: int64 of length ``padded``."""
        if x.numel() != self.dim:
            raise ValueError(f"update has {x.numel()} values, the mechanism {self.dim}")
        signs = rotation_signs(self.rotation_seed, round_index, self.padded, bits.device)
        z = rotate(x, signs) * (2.0**self.norm_bits / self.clip)
        r, _ = conditional_round(z, self.bound_sq, bits, max_tries=self.max_tries)
        for _ in range(self.pieces):
            r = r + discrete_gaussian(bits, self.variance, self.padded)
        return r

    def decode(self, total: torch.Tensor, divisor: int, *, round_index: int) -> torch.Tensor:
        """The average (float64, length ``dim``) from the exact integer sum of ``divisor`` peers."""
        signs = rotation_signs(self.rotation_seed, round_index, self.padded, total.device)
        y = total.double() * (self.clip / 2.0**self.norm_bits)
        return unrotate(y, signs, self.dim) / divisor

    # -- bounds and accounting -------------------------------------------------------------------
    def value_bound(self) -> int:
        """|one peer's coordinate| (integer units), except with probability ~1e-31."""
        return math.floor(self.l2) + math.ceil(TAIL_Z * math.sqrt(self.pieces * self.variance))

    def sum_bound(self) -> int:
        """|a coordinate of the K-fold sum| (integer units), except with probability ~1e-31."""
        noise = TAIL_Z * math.sqrt(self.peers * self.pieces * self.variance)
        return self.peers * math.floor(self.l2) + math.ceil(noise)

    def value_bits(self) -> int:
        """Bits of the offset per-peer value range the encrypted aggregator must hold."""
        return (2 * self.value_bound() + 1).bit_length()

    def refusal_probability(self, rounds: int) -> float:
        """Probability that some peer refuses some round (subtracted from delta)."""
        draws = 3.0 * self.padded * self.pieces  # candidates per round, generously
        per = self.beta**self.max_tries + draws * math.exp(-64.0)
        return rounds * self.peers * per

    def epsilon(self, delta: float, rounds: int, withheld: int = 0) -> float:
        """eps at ``delta`` after ``rounds``, if ``withheld`` peers do not add their noise."""
        if not 0 <= withheld < self.peers:
            return math.inf
        fail = self.refusal_probability(rounds)
        if fail >= delta:
            return math.inf
        return ddg_epsilon(
            variance=self.variance,
            components=(self.peers - withheld) * self.pieces,
            l2=self.l2,
            dim=self.padded,
            rounds=rounds,
            delta=delta - fail,
        )

    def noise_multiplier(self) -> float:
        """Standard deviation of the summed noise over the sensitivity (Gaussian-equivalent)."""
        return math.sqrt(self.peers * self.pieces * self.variance) / self.l2

    def report(self, delta: float, rounds: int, threshold: int | None = None) -> dict[str, Any]:
        """Plain data for run.json and the log."""
        t = threshold or self.peers
        withheld = sorted({0, 1 % self.peers, self.peers - t} - {self.peers})
        return {
            "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021)",
            "unit": "one peer's whole update per round (add/remove), summed under aggregation",
            "delta": delta,
            "rounds": rounds,
            "epsilon": self.epsilon(delta, rounds),
            "epsilon_if_withheld": {str(c): self.epsilon(delta, rounds, c) for c in withheld},
            "noise_multiplier": self.noise_multiplier(),
            "per_peer_variance": self.variance * self.pieces,
            "components_per_peer": self.pieces,
            "l2_sensitivity": self.l2,
            "norm_bits": self.norm_bits,
            "granularity": self.clip / 2.0**self.norm_bits,
            "dimension": self.padded,
            "beta": self.beta,
            "refusal_probability": self.refusal_probability(rounds),
            "noise": "exact discrete Gaussian (Canonne, Kamath, Steinke) from ChaCha20",
        }
