"""The update pipeline, written once: clip -> DP noise share -> quantize -> aggregate ->
dequantize. The trainer runs its stages per peer (local peers prepare one after the other, the
aggregation runs on the transports' threads); the engine runs them in one call per step.

The no-wrap check is here too (:func:`no_wrap_bound`, :meth:`UpdatePipeline.check`): before
training, the K-fold sum bound must fit the aggregator's modulus and one peer's value (its
clipped update plus its DP noise share) must fit the aggregator's per-value range.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from dmhe import dp as dp_mod
from dmhe.aggregators.base import Aggregator
from dmhe.config import MODES, ConfigError, Mode, UpdateRefused
from dmhe.quantize import (
    INT64_LIMIT,
    check_no_wrap,
    clip_coordinates,
    clip_l2,
    dequantize,
    quantize,
)
from dmhe.transport import Transport

__all__ = ["UpdatePipeline", "no_wrap_bound"]


def no_wrap_bound(
    peers: int, clip: float, scale_bits: int, modulus: int, sigma: float | None = None
) -> int:
    """Bound on ``|sum|`` of K quantized updates (plus the summed DP noise when ``sigma``);
    :class:`ConfigError` when it would wrap modulo ``modulus``."""
    extra = dp_mod.noise_tail_bound(sigma, clip) if sigma else 0.0
    try:
        return check_no_wrap(peers, clip, scale_bits, modulus, extra=extra)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class UpdatePipeline:
    """One mode's update path for K peers (see the module docstring).

    ``mode`` is a key of :data:`dmhe.config.MODES`; ``sigma`` the DP noise multiplier (DP modes
    only). The pipeline holds no per-peer state: one instance serves every local peer.
    """

    def __init__(
        self,
        *,
        mode: str,
        peers: int,
        clip: float,
        clip_kind: str = "l2",
        scale_bits: int = 16,
        sigma: float | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if clip_kind not in ("l2", "coordinate"):
            raise ConfigError(f"clip_kind must be 'l2' or 'coordinate', got {clip_kind!r}")
        self.mode: Mode = MODES[mode]
        if self.mode.dp and not (sigma and sigma > 0):
            raise ConfigError(f"mode {mode!r} needs a positive DP noise multiplier")
        self.peers, self.clip, self.scale_bits = peers, clip, scale_bits
        self.sigma = sigma if self.mode.dp else None
        self._clip_fn = clip_l2 if clip_kind == "l2" else clip_coordinates
        self.sum_bound: int | None = None

    @property
    def quantized(self) -> bool:
        """Whether updates are summed as integers (exact) rather than floats."""
        return self.mode.quantized

    def check(self, aggregator: Aggregator, num_values: int) -> int | None:
        """The one no-wrap check, before training; returns the sum bound (None if float)."""
        if not self.quantized:
            return None
        self.sum_bound = no_wrap_bound(
            self.peers, self.clip, self.scale_bits, aggregator.modulus, self.sigma
        )
        value_bound = round(self.clip * 2**self.scale_bits)
        if self.sigma:  # one peer's value: its clipped update plus its share of the DP noise
            share_sigma = self.sigma / math.sqrt(self.peers)
            value_bound += math.ceil(
                dp_mod.noise_tail_bound(share_sigma, self.clip) * 2**self.scale_bits
            )
        try:
            aggregator.check(
                num_values=num_values, sum_bound=self.sum_bound, value_bound=value_bound
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return self.sum_bound

    def prepare(
        self,
        update: torch.Tensor,
        *,
        peer: int,
        round_index: int,
        aggregator: Aggregator,
        generator: torch.Generator | None = None,
    ) -> Any:
        """Clip, add this peer's DP noise share, quantize: what the peer hands the aggregator.

        Raises :class:`UpdateRefused` (naming the peer and the round) for NaN/inf values or,
        in quantized modes, raw values beyond the quantizer's int64 range. ``generator`` seeds
        the DP noise (DP modes).
        """
        self._refuse_unfit(update, f"round {round_index}, peer {peer}")
        x = self._clip_fn(update, self.clip)
        if self.sigma:
            if generator is None:
                raise ValueError("a DP mode needs a generator for the noise share")
            x = dp_mod.add_noise_share(
                x, sigma=self.sigma, clip=self.clip, peers=self.peers, generator=generator
            )
        if not self.quantized:
            return x.double().cpu().numpy()
        q = quantize(x, self.scale_bits)  # clipped and finite: cannot overflow
        if aggregator.accepts_tensors:
            return q  # stays on its device: the aggregator takes it by DLPack
        return q.cpu().numpy()

    def _refuse_unfit(self, update: torch.Tensor, where: str) -> None:
        """NaN/inf anywhere, or (quantized modes) a raw value whose quantized form would not
        fit int64: a diverged peer, which clipping would silently hide."""
        if not update.numel():
            return
        peak = float(update.detach().abs().max())  # NaN propagates: one reduction checks all
        limit = INT64_LIMIT / 2**self.scale_bits if self.quantized else math.inf
        if peak < limit:
            return
        bad = int((~torch.isfinite(update)).sum())
        if bad:
            why = f"{bad} NaN/inf values"
        else:
            why = f"|value| {peak:.3g} overflows the quantizer (2^{self.scale_bits} scale, int64)"
        raise UpdateRefused(f"{where}: update has {why}; round refused, nothing kept")

    def aggregate(self, aggregator: Aggregator, transport: Transport, prepared: Any) -> np.ndarray:
        """The exact sum over all peers (collective: every peer calls it)."""
        if self.quantized:
            return aggregator.allreduce_sum(transport, prepared)
        return aggregator.allreduce_sum_float(transport, prepared)

    def finish(self, total: np.ndarray, divisor: int) -> torch.Tensor:
        """The average (float64, on the CPU) from the sum of ``divisor`` peers' values."""
        t = torch.from_numpy(np.asarray(total))
        if self.quantized:
            return dequantize(t, self.scale_bits, divisor=divisor)
        return t / divisor

    def average(
        self,
        aggregator: Aggregator,
        transport: Transport,
        update: torch.Tensor,
        *,
        round_index: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """All stages for this peer in one call: ``(average, seconds per stage)``."""
        t0 = time.perf_counter()
        prepared = self.prepare(
            update,
            peer=transport.rank,
            round_index=round_index,
            aggregator=aggregator,
            generator=generator,
        )
        t1 = time.perf_counter()
        total = self.aggregate(aggregator, transport, prepared)
        t2 = time.perf_counter()
        avg = self.finish(total, aggregator.contributors or transport.world_size)
        return avg, {"quantize": t1 - t0, "aggregate": t2 - t1, **aggregator.timings}
