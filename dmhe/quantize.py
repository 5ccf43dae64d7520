"""Clipping and fixed-point quantization of model updates.

A clipped real value x (|x| <= c) becomes the integer ``round(x * 2**f)`` with a public scale f.
The rounding is ``torch.round``, which rounds halves to even; it is computed in float64, where
the float32 input and the multiplication by a power of two are exact, so the quantized integers
are a deterministic function of the input bits on every device. Dequantizing is exact division
by ``2**f``; the only error is the rounding, at most ``2**-(f+1)`` per value (and at most
``K * 2**-(f+1)`` on a sum of K values, ``2**-(f+1)`` on the average).

The sum of K quantized updates is computed modulo some integer t (2**64 for int64, the plaintext
modulus of BFV); it equals the true sum when K * max|q| < t/2, which :func:`check_no_wrap`
verifies before training starts.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "INT64_LIMIT",
    "check_no_wrap",
    "clip_coordinates",
    "clip_l2",
    "dequantize",
    "max_abs_quantized",
    "quantization_error_bound",
    "quantize",
]


def clip_l2(x: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale ``x`` so that its L2 norm is at most ``clip``, then clamp every coordinate to
    ``[-clip, clip]`` (a no-op in exact arithmetic; it guards the float rounding of the scale, so
    that the per-coordinate bound used by :func:`check_no_wrap` always holds)."""
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    norm = torch.linalg.vector_norm(x.double())
    if norm > clip:
        x = (x.double() * (clip / norm)).to(x.dtype)
    return x.clamp(-clip, clip)


def clip_coordinates(x: torch.Tensor, clip: float) -> torch.Tensor:
    """Clamp every coordinate of ``x`` to ``[-clip, clip]``."""
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    return x.clamp(-clip, clip)


#: |round(x * 2**f)| must stay below this to be an int64 (2**63 itself does not fit)
INT64_LIMIT = float(2**63)


def quantize(x: torch.Tensor, scale_bits: int) -> torch.Tensor:
    """``round(x * 2**scale_bits)`` as int64 (round half to even), on ``x``'s device.

    Raises ``ValueError`` when a value is NaN or infinite, or when ``|x| * 2**f`` reaches 2**63:
    the cast would give INT64_MIN or wrap, and such sums are silently wrong (two NaN peers sum
    to 0 modulo 2**64).
    """
    _check_scale(scale_bits)
    scaled = torch.round(x.double() * float(2**scale_bits))
    if scaled.numel():
        peak = float(scaled.abs().max())  # NaN propagates through max: one reduction checks all
        if not peak < INT64_LIMIT:
            bad = int((~torch.isfinite(x)).sum())
            what = f"{bad} NaN/inf values" if bad else f"|x| * 2^{scale_bits} = {peak:.3g}"
            raise ValueError(f"cannot quantize: {what} (int64 holds below 2^63)")
    return scaled.to(torch.int64)


def dequantize(q: torch.Tensor, scale_bits: int, divisor: int = 1) -> torch.Tensor:
    """``q / (divisor * 2**scale_bits)`` in float64 (``divisor`` = K turns a sum into a mean)."""
    _check_scale(scale_bits)
    return q.double() / (float(divisor) * float(2**scale_bits))


def quantization_error_bound(scale_bits: int) -> float:
    """Largest ``|dequantize(quantize(x)) - x|`` for one value: ``2**-(f+1)``."""
    return 2.0 ** -(scale_bits + 1)


def max_abs_quantized(clip: float, scale_bits: int) -> int:
    """Largest ``|round(x * 2**f)|`` over ``|x| <= clip``."""
    return math.floor(clip * 2.0**scale_bits + 0.5)


def check_no_wrap(k: int, clip: float, scale_bits: int, modulus: int, *, extra: float = 0.0) -> int:
    """Raise ``ValueError`` unless a sum of K quantized values cannot wrap modulo ``modulus``.

    Each coordinate of a clipped update is at most ``clip`` in magnitude, so each quantized
    value is at most ``round(clip * 2**f)`` (= ``clip * 2**f`` when that is an integer) and the
    sum at most K times that, plus ``extra * 2**f`` (a high-probability bound on added noise, for
    DP). The sum is decoded in the centred range, so it must stay below ``modulus / 2``.
    Returns the bound on ``|sum|`` in quantized units.
    """
    if k < 1:
        raise ValueError(f"need at least one peer, got {k}")
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    _check_scale(scale_bits)
    bound = k * max_abs_quantized(clip, scale_bits) + math.ceil(extra * 2.0**scale_bits)
    if 2 * bound >= modulus:
        raise ValueError(
            f"the sum of {k} updates can wrap: K*clip*2^f{' + noise' if extra else ''} = {bound} "
            f">= t/2 = {modulus / 2:.6g} (clip={clip}, scale_bits={scale_bits}); lower the clip "
            f"or scale_bits, or use a larger plaintext modulus"
        )
    return bound


def _check_scale(scale_bits: int) -> None:
    if not isinstance(scale_bits, int) or not 0 <= scale_bits <= 52:
        # Beyond 52 bits float64 cannot carry x * 2**f exactly for |x| ~ 1.
        raise ValueError(f"scale_bits must be an int in [0, 52], got {scale_bits!r}")
