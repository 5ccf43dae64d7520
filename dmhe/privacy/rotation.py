"""Randomized Hadamard rotation and conditional randomized rounding (the integer front end of
the distributed discrete Gaussian, Kairouz, Liu and Steinke 2021, Sec. 4).

The rotation ``x -> H D x / sqrt(n)`` (D: random signs from the round's public seed, H: the
Walsh-Hadamard matrix, n: the next power of two) is orthogonal, so it keeps the L2 norm and
spreads a vector's mass over every coordinate: the rounding and the noise then act on
coordinates of similar size. Everyone derives the same D, so the sum is rotated back after the
aggregation. Conditional randomized rounding rounds each coordinate up with probability equal
to its fractional part and retries until the rounded vector's squared norm is within
:func:`rounding_norm_bound_sq`, so the bound holds for every vector that leaves the peer.
"""

from __future__ import annotations

import math

import torch

from dmhe.privacy.random import RandomBits, derive_seed

__all__ = [
    "RoundingFailed",
    "conditional_round",
    "fwht",
    "next_pow2",
    "rotate",
    "rotation_signs",
    "rounding_norm_bound_sq",
    "unrotate",
]


class RoundingFailed(RuntimeError):
    """Conditional rounding exceeded its retries (probability beta^tries, counted in delta)."""


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized fast Walsh-Hadamard transform of a 1-D tensor of power-of-two length."""
    n = x.numel()
    if n & (n - 1):
        raise ValueError(f"length must be a power of two, got {n}")
    y = x.reshape(1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        y = torch.stack((y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]), dim=1)
        h *= 2
    return y.reshape(n)


def rotation_signs(
    seed: bytes, round_index: int, n: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The round's public random signs (float64 +-1), the same on every peer."""
    bits = RandomBits(derive_seed(b"rotation", seed, round_index), device=device)
    return 1.0 - 2.0 * bits.below(2, n).double()


def rotate(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``H D pad(x) / sqrt(n)`` in float64 (n = ``signs.numel()``)."""
    n = signs.numel()
    padded = torch.zeros(n, dtype=torch.float64, device=signs.device)
    padded[: x.numel()] = x.reshape(-1).double().to(signs.device)
    return fwht(padded * signs) / math.sqrt(n)


def unrotate(y: torch.Tensor, signs: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of :func:`rotate` (H is symmetric and H H = n I), cut back to ``dim``."""
    n = signs.numel()
    return (fwht(y.double().to(signs.device)) / math.sqrt(n) * signs)[:dim]


def rounding_norm_bound_sq(norm: float, dim: int, beta: float) -> float:
    """KLS's bound on the squared norm after randomized rounding of a vector of L2 norm at most
    ``norm`` in ``dim`` integer coordinates, exceeded with probability at most ``beta``:
    ``min(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2), (c + sqrt(d))^2)``."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    c, d = float(norm), float(dim)
    tail = math.sqrt(2.0 * math.log(1.0 / beta)) * (c + math.sqrt(d) / 2.0)
    return min(c * c + d / 4.0 + tail, (c + math.sqrt(d)) ** 2)


def conditional_round(
    z: torch.Tensor, bound_sq: float, bits: RandomBits, *, max_tries: int
) -> tuple[torch.Tensor, int]:
    """Randomized rounding of float64 ``z`` (up with probability frac(z), a 53-bit comparison),
    retried until ``||round(z)||^2 <= bound_sq``; returns ``(int64 vector, tries)``."""
    floor = torch.floor(z)
    frac_scaled = (z - floor) * 2.0**53  # exact: frac(z) has at most 53 significant bits
    base = floor.to(torch.int64)
    limit = math.floor(bound_sq)
    for tries in range(1, max_tries + 1):
        u = (bits.bits62(z.numel()) >> 9).double()
        r = base + (u < frac_scaled).to(torch.int64)
        if int((r * r).sum()) <= limit:
            return r, tries
    raise RoundingFailed(f"randomized rounding stayed above its norm bound {max_tries} times")
