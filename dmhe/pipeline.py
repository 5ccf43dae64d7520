"""The update pipeline, written once: clip -> DP mechanism -> quantize -> aggregate ->
dequantize. The trainer runs its stages per peer (local peers prepare one after the other, the
aggregation runs on the transports' threads); the engine runs them in one call per step.

DP modes (:data:`dmhe.config.DP_MECHANISMS`, mechanisms in :mod:`dmhe.privacy`): the continuous
Gaussian ones add float noise before the fixed-point quantization; the distributed discrete
Gaussian replaces the quantizer by its own integer encoding (rotation, conditional rounding,
integer noise) and is decoded after the sum; DP-SGD adds its noise inside local training and
passes through here like a plain update.

The no-wrap check is here too (:func:`no_wrap_bound`, :meth:`UpdatePipeline.check`): before
training, the K-fold sum bound must fit the aggregator's modulus and one peer's value (its
clipped update plus its DP noise) must fit the aggregator's per-value range.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dmhe.aggregators.base import Aggregator
from dmhe.config import DEFAULT_DP_EPSILON, DP_MECHANISMS, MODES, ConfigError, Mode, UpdateRefused
from dmhe.quantize import (
    INT64_LIMIT,
    check_no_wrap,
    clip_coordinates,
    clip_l2,
    dequantize,
    quantize,
)
from dmhe.transport import Transport

if TYPE_CHECKING:
    from dmhe.config import TrainConfig
    from dmhe.privacy import Mechanism

__all__ = ["UpdatePipeline", "no_wrap_bound"]


def no_wrap_bound(
    peers: int, clip: float, scale_bits: int, modulus: int, noise: float = 0.0
) -> int:
    """Bound on ``|sum|`` of K quantized updates (plus ``noise``, a bound on the summed DP noise
    per coordinate in real units); :class:`ConfigError` when it would wrap modulo ``modulus``."""
    try:
        return check_no_wrap(peers, clip, scale_bits, modulus, extra=noise)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class UpdatePipeline:
    """One mode's update path for K peers (see the module docstring).

    ``mode`` is a key of :data:`dmhe.config.MODES`. DP modes take their ``mechanism`` (built by
    :meth:`for_config`), or for the continuous Gaussian modes just ``sigma``, the noise
    multiplier. The pipeline holds no per-peer state: one instance serves every local peer.
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
        mechanism: Mechanism | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if clip_kind not in ("l2", "coordinate"):
            raise ConfigError(f"clip_kind must be 'l2' or 'coordinate', got {clip_kind!r}")
        self.mode_name = mode
        self.mode: Mode = MODES[mode]
        self.peers, self.clip, self.scale_bits = peers, clip, scale_bits
        self.kind = DP_MECHANISMS.get(mode)
        if self.kind is not None and mechanism is None and self.kind.startswith("gaussian"):
            if not (sigma and sigma > 0):
                raise ConfigError(f"mode {mode!r} needs a positive DP noise multiplier")
            from dmhe.privacy import GaussianNoise

            mechanism = GaussianNoise(peers, clip, sigma, scope=self.kind[len("gaussian-") :])
        if self.kind is not None and mechanism is None:
            raise ConfigError(f"mode {mode!r} needs its DP mechanism (UpdatePipeline.for_config)")
        if self.kind == "ddg" and clip_kind != "l2":
            raise ConfigError(f"mode {mode!r} needs clip_kind 'l2'")
        self.mechanism = mechanism if self.kind is not None else None
        self.sigma = getattr(self.mechanism, "sigma", None)
        self._clip_fn = clip_l2 if clip_kind == "l2" else clip_coordinates
        self.sum_bound: int | None = None

    @classmethod
    def for_config(
        cls, cfg: TrainConfig, num_values: int, *, shard_sizes: list[int] | None = None
    ) -> UpdatePipeline:
        """The pipeline of a training configuration, its DP mechanism calibrated to
        ``cfg.dp_epsilon`` (or :data:`~dmhe.config.DEFAULT_DP_EPSILON`) or ``cfg.dp_sigma``
        over ``cfg.rounds``; ``shard_sizes``: the peers' records (DP-SGD's sampling rate)."""
        kind = DP_MECHANISMS.get(cfg.mode)
        sample_rate = None
        if kind == "dp-sgd" and shard_sizes:
            from dmhe.privacy.dpsgd import sample_rate_for

            sample_rate = max(sample_rate_for(n, cfg.batch_size) for n in shard_sizes)
        mechanism: Any = None
        eps = cfg.dp_epsilon if cfg.dp_sigma is None else None
        if kind is not None and eps is None and cfg.dp_sigma is None:
            eps = DEFAULT_DP_EPSILON
        try:
            mechanism = _build_mechanism(cfg, kind, num_values, eps, sample_rate)
        except ValueError as exc:
            raise ConfigError(f"mode {cfg.mode!r}: {exc}") from None
        return cls(
            mode=cfg.mode,
            peers=cfg.peers,
            clip=cfg.clip,
            clip_kind=cfg.clip_kind,
            scale_bits=cfg.scale_bits,
            mechanism=mechanism,
        )

    def noise_seed(self, cfg: TrainConfig, round_index: int, peer: int) -> bytes | None:
        """The DP noise seed of one peer and round: None (os.urandom through the CSPRNG) unless
        ``cfg.dp_reproducible`` (tests: anyone who knows the run seed can remove the noise)."""
        if self.mechanism is None or not cfg.dp_reproducible:
            return None
        from dmhe.privacy.random import derive_seed

        return derive_seed(b"noise", cfg.seed, round_index, peer)

    @property
    def quantized(self) -> bool:
        """Whether updates are summed as integers (exact) rather than floats."""
        return self.mode.quantized

    @property
    def integer_dp(self) -> bool:
        """Whether the DP mechanism encodes updates itself (distributed discrete Gaussian)."""
        return self.kind == "ddg"

    def wire_values(self, num_values: int) -> int:
        """Values per peer and round on the wire (the rotation pads to a power of two)."""
        if self.integer_dp:
            return int(self.mechanism.padded)  # type: ignore[union-attr]
        return num_values

    def aggregator_options(self) -> dict[str, Any]:
        """Defaults the aggregator must take from the mechanism (the encrypted aggregator's
        per-value range from the DP noise bound)."""
        if self.integer_dp and self.mode.aggregator == "encrypted":
            return {"value_bits": self.mechanism.value_bits()}  # type: ignore[union-attr]
        return {}

    def epsilon(self, delta: float, steps: int) -> float | None:
        """eps at ``delta`` after ``steps`` aggregations (rounds); None for non-DP modes."""
        if self.mechanism is None:
            return None
        return float(self.mechanism.epsilon(delta, steps))

    def privacy_report(
        self, delta: float, rounds: int, threshold: int | None = None
    ) -> dict[str, Any] | None:
        """What the DP guarantee is, for run.json and the log (None for non-DP modes)."""
        if self.mechanism is None:
            return None
        return self.mechanism.report(delta, rounds, threshold)

    def check(self, aggregator: Aggregator, num_values: int) -> int | None:
        """The one no-wrap check, before training; returns the sum bound (None if float)."""
        if not self.quantized:
            return None
        mech: Any = self.mechanism
        if self.integer_dp:
            self.sum_bound = int(mech.sum_bound())
            if 2 * self.sum_bound >= aggregator.modulus:
                raise ConfigError(
                    f"the DP sum can reach {self.sum_bound}, beyond the aggregator's modulus/2 "
                    f"({aggregator.modulus / 2:.6g}); lower dp_bits or the noise"
                )
            value_bound = int(mech.value_bound())
        else:
            noise_sum = mech.sum_tail() if self.kind and self.kind.startswith("gaussian") else 0
            self.sum_bound = no_wrap_bound(
                self.peers, self.clip, self.scale_bits, aggregator.modulus, noise_sum
            )
            value_bound = round(self.clip * 2**self.scale_bits)
            if noise_sum:  # one peer's value: its clipped update plus its DP noise
                value_bound += math.ceil(mech.value_tail() * 2**self.scale_bits)
        try:
            aggregator.check(
                num_values=self.wire_values(num_values),
                sum_bound=self.sum_bound,
                value_bound=value_bound,
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
        noise_seed: bytes | None = None,
    ) -> Any:
        """Clip, apply this peer's DP mechanism, quantize: what the peer hands the aggregator.

        Raises :class:`UpdateRefused` (naming the peer and the round) for NaN/inf values or,
        in quantized modes, raw values beyond the quantizer's int64 range. ``noise_seed``
        (32 bytes) makes the DP noise reproducible (tests); by default it is keyed from
        ``os.urandom`` through the CSPRNG.
        """
        where = f"round {round_index}, peer {peer}"
        self._refuse_unfit(update, where)
        x = self._clip_fn(update, self.clip)
        mech: Any = self.mechanism
        if self.kind is not None and self.kind != "dp-sgd":
            from dmhe.privacy import RandomBits
            from dmhe.privacy.rotation import RoundingFailed

            bits = RandomBits(noise_seed, device=x.device)
            if self.integer_dp:
                try:
                    q = mech.encode(x.reshape(-1), round_index=round_index, bits=bits)
                except (RoundingFailed, RuntimeError) as exc:
                    raise UpdateRefused(f"{where}: {exc}; round refused") from None
                return q if aggregator.accepts_tensors else q.cpu().numpy()
            x = mech.add(x, bits)
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

    def finish(self, total: np.ndarray, divisor: int, *, round_index: int = 0) -> torch.Tensor:
        """The average (float64, on the CPU) from the sum of ``divisor`` peers' values
        (``round_index``: the round's rotation, for the discrete Gaussian)."""
        t = torch.from_numpy(np.asarray(total))
        if self.integer_dp:
            return self.mechanism.decode(t, divisor, round_index=round_index)  # type: ignore[union-attr]
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
        noise_seed: bytes | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """All stages for this peer in one call: ``(average, seconds per stage)``."""
        t0 = time.perf_counter()
        prepared = self.prepare(
            update,
            peer=transport.rank,
            round_index=round_index,
            aggregator=aggregator,
            noise_seed=noise_seed,
        )
        t1 = time.perf_counter()
        total = self.aggregate(aggregator, transport, prepared)
        t2 = time.perf_counter()
        divisor = aggregator.contributors or transport.world_size
        avg = self.finish(total, divisor, round_index=round_index)
        return avg, {"quantize": t1 - t0, "aggregate": t2 - t1, **aggregator.timings}


def _build_mechanism(
    cfg: TrainConfig,
    kind: str | None,
    num_values: int,
    eps: float | None,
    sample_rate: float | None,
) -> Any:
    """The calibrated mechanism of ``kind`` (None for non-DP modes)."""
    if kind is None:
        return None
    from dmhe.privacy import DPSGD, DistributedDiscreteGaussian, GaussianNoise
    from dmhe.privacy.accounting import gaussian_noise_multiplier
    from dmhe.privacy.random import derive_seed

    if kind == "ddg":
        return DistributedDiscreteGaussian.calibrate(
            peers=cfg.peers,
            clip=cfg.clip,
            dim=num_values,
            rounds=cfg.rounds,
            delta=cfg.dp_delta,
            epsilon=eps,
            noise_multiplier=cfg.dp_sigma,
            norm_bits=cfg.dp_bits,
            rotation_seed=derive_seed(b"run", cfg.seed),
        )
    steps, q = cfg.rounds, 1.0
    if kind == "dp-sgd":
        if sample_rate is None:
            raise ValueError("DP-SGD needs the peers' sample rate")
        steps, q = cfg.rounds * cfg.local_steps, sample_rate
    sigma = cfg.dp_sigma
    if sigma is None:
        assert eps is not None
        sigma = gaussian_noise_multiplier(
            eps, steps=steps, delta=cfg.dp_delta, sample_rate=q, accountant=cfg.dp_accountant
        )
    if kind == "dp-sgd":
        return DPSGD(sigma, cfg.dp_max_grad_norm, q, cfg.local_steps, cfg.dp_accountant)
    scope = kind[len("gaussian-") :]
    return GaussianNoise(cfg.peers, cfg.clip, sigma, scope=scope, accountant=cfg.dp_accountant)
