"""The continuous Gaussian baselines: every message private on its own (``local``), or each
peer adding 1/K of the noise of a sum that is assumed to be revealed only as a whole
(``trusted-sum``).

A ``local`` peer adds N(0, sigma^2 c^2) to its clipped update, so each message a neighbour sees is
the Gaussian mechanism with noise multiplier sigma: the honest baseline for a DP-only
decentralized system. A ``trusted-sum`` peer adds N(0, sigma^2 c^2 / K): only the sum of all K has
multiplier sigma, one message has sigma / sqrt(K). Noise: Box-Muller on 53-bit uniforms from the
CSPRNG (:meth:`RandomBits.normal`; float64; floating-point Gaussians are not exactly Gaussian,
see Mironov 2012 — the integer mechanism :mod:`dmhe.privacy.ddg` is exact). Accounting: Opacus
(RDP or PRV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dmhe.privacy.accounting import gaussian_epsilon
from dmhe.privacy.random import RandomBits

__all__ = ["GaussianNoise", "SCOPES"]

SCOPES = ("local", "trusted-sum")
_TAIL_Z = 12.0


@dataclass(frozen=True)
class GaussianNoise:
    """Gaussian noise of multiplier ``sigma`` on clipped updates (see the module docstring)."""

    peers: int
    clip: float
    sigma: float
    scope: str = "local"
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    @property
    def name(self) -> str:
        """A readable name."""
        return f"Gaussian ({self.scope})"

    @property
    def per_peer_std(self) -> float:
        """Standard deviation of one peer's noise (real units)."""
        share = 1.0 if self.scope == "local" else 1.0 / math.sqrt(self.peers)
        return self.sigma * self.clip * share

    def add(self, x: torch.Tensor, bits: RandomBits) -> torch.Tensor:
        """``x`` (float64) plus this peer's noise, on ``x``'s device."""
        z = bits.normal(x.numel())
        return x.double() + self.per_peer_std * z.to(x.device).view_as(x)

    def value_tail(self) -> float:
        """|one peer's noise| per coordinate, except with probability ~1e-31 (real units)."""
        return _TAIL_Z * self.per_peer_std

    def sum_tail(self) -> float:
        """|the summed noise| per coordinate, except with probability ~1e-31 (real units)."""
        return _TAIL_Z * self.per_peer_std * math.sqrt(self.peers)

    def message_multiplier(self) -> float:
        """Noise multiplier of one peer's message."""
        return self.per_peer_std / self.clip

    def epsilon(self, delta: float, rounds: int, withheld: int = 0) -> float:
        """eps at ``delta`` after ``rounds``: of each message (``local``), or of the sum if
        ``withheld`` peers do not add their share (``trusted-sum``)."""
        if self.scope == "local":
            z = self.sigma
        elif 0 <= withheld < self.peers:
            z = self.sigma * math.sqrt((self.peers - withheld) / self.peers)
        else:
            return math.inf
        return gaussian_epsilon(
            noise_multiplier=z, steps=rounds, delta=delta, accountant=self.accountant
        )

    def report(self, delta: float, rounds: int, threshold: int | None = None) -> dict[str, Any]:
        """Plain data for run.json and the log."""
        out: dict[str, Any] = {
            "mechanism": f"Gaussian, {self.scope}",
            "delta": delta,
            "rounds": rounds,
            "noise_multiplier": self.sigma,
            "accountant": self.accountant,
            "epsilon": self.epsilon(delta, rounds),
        }
        if self.scope == "local":
            out["unit"] = "one peer's whole update per round, in every message it sends"
        else:
            out["unit"] = "one peer's update per round, in the sum only (assumes a trusted sum)"
            one = gaussian_epsilon(
                noise_multiplier=self.message_multiplier(),
                steps=rounds,
                delta=delta,
                accountant=self.accountant,
            )
            out["epsilon_of_one_message"] = one
            out["epsilon_if_withheld"] = {
                str(c): self.epsilon(delta, rounds, c) for c in sorted({0, 1 % self.peers})
            }
        return out
