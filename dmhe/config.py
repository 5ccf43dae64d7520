"""The training configuration: schema, the mode table, validation, and the error types.

Importing this module imports neither torch nor gpubfv (``validate`` imports what it needs).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_DP_EPSILON",
    "DP_ACCOUNTANTS",
    "DP_MECHANISMS",
    "MODES",
    "SECURE_MODES",
    "ConfigError",
    "Mode",
    "TrainConfig",
    "UpdateRefused",
    "flag_for",
    "rounds_for_epochs",
    "to_flags",
]


class Mode(NamedTuple):
    """What a training mode does: which aggregator, whether updates are quantized, whether
    each peer adds a DP noise share."""

    aggregator: str
    quantized: bool
    dp: bool


#: training mode -> what it does (the one mode table, used by the trainer and the engine)
MODES: dict[str, Mode] = {
    "plaintext": Mode("plaintext", False, False),
    "plaintext-quantized": Mode("plaintext", True, False),
    "dp": Mode("dp", True, True),
    "dp-trusted-sum": Mode("dp", True, True),
    "dp-sgd": Mode("plaintext", True, True),
    "ddp-plaintext": Mode("dp", True, True),
    "secagg": Mode("secagg", True, False),
    "encrypted": Mode("encrypted", True, False),
    "encrypted-dp": Mode("encrypted", True, True),
}
SECURE_MODES = ("secagg", "encrypted", "encrypted-dp")

#: DP mode -> its mechanism (dmhe.privacy): ``gaussian-local`` makes every message DP on its
#: own; ``gaussian-trusted-sum`` gives each peer 1/K of the noise, private only as a sum that no
#: one sees in parts; ``dp-sgd`` is record-level DP-SGD at each peer (Opacus); ``ddg`` is the
#: distributed discrete Gaussian in integers (``ddp-plaintext``: its sum in the clear, the
#: bit-exact reference of ``encrypted-dp``)
DP_MECHANISMS: dict[str, str] = {
    "dp": "gaussian-local",
    "dp-trusted-sum": "gaussian-trusted-sum",
    "dp-sgd": "dp-sgd",
    "ddp-plaintext": "ddg",
    "encrypted-dp": "ddg",
}
#: the target epsilon of a DP mode given neither dp_epsilon nor dp_sigma (at dp_delta, over the
#: whole run)
DEFAULT_DP_EPSILON = 8.0
DP_ACCOUNTANTS = ("rdp", "prv")

# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"rounds", "out_dir", "device", "peer_timeout", "setup_timeout", "setup_drop_prob"}
)


class ConfigError(ValueError):
    """An impossible or unsafe training configuration, refused before training starts."""


@dataclass
class TrainConfig:
    """Every setting of one training run (plain data: ``to_dict``/``from_dict`` round-trip).

    ``validate`` refuses impossible or unsafe settings with a :class:`ConfigError`; the
    aggregator's own options (``aggregator_options``) are checked against its schema when the
    aggregator is built (``dmhe.aggregators.make_aggregator``).
    """

    dataset: str = "digits"
    model: str = "mlp"
    peers: int = 4
    rounds: int = 5
    local_steps: int = 1
    batch_size: int = 32
    lr: float = 0.1
    mode: str = "encrypted"
    clip: float = 1.0
    clip_kind: str = "l2"  # "l2" (global norm) or "coordinate"
    scale_bits: int = 16
    threshold: int | None = None  # t-out-of-K (encrypted modes); None: all K needed
    device: str = "cpu"
    seed: int = 0
    out_dir: str | None = None
    alpha: float | None = None  # Dirichlet non-IID concentration; None: IID
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_sigma: float | None = None  # noise multiplier, instead of a target epsilon
    dp_accountant: str = "rdp"  # Opacus accountant for the Gaussian modes: rdp or prv
    dp_max_grad_norm: float = 1.0  # dp-sgd: per-sample gradient clip
    dp_bits: int | None = None  # ddg modes: clip norm in integer units is 2^dp_bits (None: auto)
    dp_reproducible: bool = False  # derive DP noise from the run seed (tests only: not private)
    data_dir: str | None = None
    download: bool = False
    drop_prob: float = 0.0
    max_retries: int = 3  # a round whose aggregation loses a needed peer is retried
    synthetic_shape: tuple[int, ...] = (1, 28, 28)
    synthetic_size: tuple[int, int] = (600, 200)
    aggregator_options: dict[str, Any] = field(default_factory=dict)
    # -- peers as processes, dropouts (dmhe.dropouts, dmhe.torch_transport) --
    peer_timeout: float | None = None  # seconds a peer waits for another; None: derived
    setup_timeout: float = 300.0  # the same bound for the set-up and the first round
    setup_drop_prob: float = 0.0  # simulated loss of a peer per set-up attempt

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["synthetic_shape"] = list(self.synthetic_shape)
        d["synthetic_size"] = list(self.synthetic_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown fields raise :class:`ConfigError`."""
        d = dict(d)
        for key in ("synthetic_shape", "synthetic_size"):
            if key in d:
                d[key] = tuple(d[key])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)

    def resume_conflicts(self, saved: dict[str, Any]) -> list[str]:
        """Fields in which this config differs from ``saved`` (a checkpoint's ``to_dict``) that
        forbid resuming it; empty when the run may resume."""
        new = self.to_dict()
        changed = {k for k in new if saved.get(k) != new[k]} - RESUMABLE_CHANGES
        if MODES[self.mode].dp and saved.get("rounds") != new["rounds"]:
            changed.add("rounds (the DP noise was calibrated for the original number)")
        return sorted(changed)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with the reason if the configuration cannot run."""

        from dmhe.data import DATASETS

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(self.mode in MODES, f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        need(self.dataset in DATASETS, f"unknown dataset {self.dataset!r}; choose from {DATASETS}")
        need(isinstance(self.peers, int) and self.peers >= 1, f"peers must be >= 1: {self.peers}")
        if self.mode in SECURE_MODES:
            need(self.peers >= 2, f"mode {self.mode!r} needs at least 2 peers")
        need(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        need(self.local_steps >= 1, f"local_steps must be >= 1, got {self.local_steps}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}")
        need(self.clip > 0 and math.isfinite(self.clip), f"clip must be positive: {self.clip}")
        need(self.clip_kind in ("l2", "coordinate"), f"clip_kind: l2|coordinate: {self.clip_kind}")
        need(
            isinstance(self.scale_bits, int) and 0 <= self.scale_bits <= 52,
            f"scale_bits must be in [0, 52], got {self.scale_bits}",
        )
        if self.threshold is not None:
            need(
                MODES[self.mode].aggregator == "encrypted",
                f"threshold only applies to encrypted modes, not {self.mode!r}",
            )
            need(
                1 <= self.threshold <= self.peers,
                f"threshold must be in [1, peers={self.peers}], got {self.threshold}",
            )
        need(0.0 <= self.drop_prob < 1.0, f"drop_prob must be in [0, 1), got {self.drop_prob}")
        need(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        self._validate_peer_faults(need)
        if self.alpha is not None:
            need(self.alpha > 0, f"alpha (Dirichlet) must be positive, got {self.alpha}")
        self._validate_synthetic(need)
        from gpubfv.backend import Backend  # the one place that knows device names

        on_gpu = isinstance(self.device, str) and Backend.device_kind(self.device) != "cpu"
        need(self.device == "cpu" or on_gpu, f"bad device {self.device!r}")
        if on_gpu:
            import torch

            need(torch.cuda.is_available(), f"device {self.device!r} asked but CUDA is unavailable")
        is_dp = MODES[self.mode].dp
        if is_dp:
            need(
                self.dp_epsilon is None or self.dp_sigma is None,
                f"mode {self.mode!r} takes one of dp_epsilon or dp_sigma, not both",
            )
            need(
                self.dp_accountant in DP_ACCOUNTANTS,
                f"dp_accountant must be one of {DP_ACCOUNTANTS}, got {self.dp_accountant!r}",
            )
            if DP_MECHANISMS[self.mode] == "ddg":
                need(self.clip_kind == "l2", f"mode {self.mode!r} needs clip_kind 'l2'")
                need(
                    self.dp_bits is None or 1 <= self.dp_bits <= 40,
                    f"dp_bits must be in [1, 40], got {self.dp_bits}",
                )
            if self.dp_epsilon is not None:
                ok = self.dp_epsilon > 0 and math.isfinite(self.dp_epsilon)
                need(ok, f"dp_epsilon must be positive: {self.dp_epsilon}")
            if self.dp_sigma is not None:
                ok = self.dp_sigma > 0 and math.isfinite(self.dp_sigma)
                need(ok, f"dp_sigma must be positive: {self.dp_sigma}")
        else:
            need(
                self.dp_epsilon is None and self.dp_sigma is None,
                f"dp_epsilon/dp_sigma given but mode {self.mode!r} adds no noise",
            )
        # checked in every mode, so that a nonsense value is never silently ignored
        need(0 < self.dp_delta < 1, f"dp_delta must be in (0, 1), got {self.dp_delta}")
        ok = self.dp_max_grad_norm > 0 and math.isfinite(self.dp_max_grad_norm)
        need(ok, f"dp_max_grad_norm must be positive, got {self.dp_max_grad_norm}")
        need(
            self.dp_bits is None or (is_dp and DP_MECHANISMS[self.mode] == "ddg"),
            f"dp_bits given but mode {self.mode!r} does not use the discrete Gaussian",
        )
        if MODES[self.mode].quantized:
            from dmhe.pipeline import no_wrap_bound

            # int64 headroom now, before any peer is built; the aggregator's own modulus (and
            # the DP noise) when the pipeline is built.
            no_wrap_bound(self.peers, self.clip, self.scale_bits, 1 << 64)

    def _validate_synthetic(self, need: Any) -> None:
        """The synthetic dataset's shape and sizes (checked whatever the dataset, so a
        nonsense value is refused rather than ignored)."""
        shape, size = tuple(self.synthetic_shape), tuple(self.synthetic_size)
        need(
            1 <= len(shape) <= 3 and all(isinstance(d, int) and d >= 1 for d in shape),
            f"synthetic_shape needs 1 to 3 positive sizes (e.g. 1x28x28), got {shape}",
        )
        need(
            len(size) == 2 and all(isinstance(n, int) and n >= 1 for n in size),
            f"synthetic_size needs two positive counts N_TRAIN,N_TEST, got {size}",
        )

    def _validate_peer_faults(self, need: Any) -> None:
        """The bounded waits and the dropout simulation."""
        if self.peer_timeout is not None:
            ok = self.peer_timeout > 0 and math.isfinite(self.peer_timeout)
            need(ok, f"peer_timeout must be positive seconds, got {self.peer_timeout}")
        ok = self.setup_timeout > 0 and math.isfinite(self.setup_timeout)
        need(ok, f"setup_timeout must be positive seconds, got {self.setup_timeout}")
        need(
            0.0 <= self.setup_drop_prob < 1.0,
            f"setup_drop_prob must be in [0, 1), got {self.setup_drop_prob}",
        )


class UpdateRefused(ValueError):
    """A peer's update cannot be aggregated (NaN/inf, or beyond the quantizer's range): the
    round is refused, naming the peer and the round, and nothing of it is kept."""


# Words in ConfigError messages that name a setting; the CLI shows them as its flags.
_NOT_FLAGS = frozenset({"aggregator_options", "synthetic_size", "synthetic_shape"})
_EXTRA_FLAGS = {"resume": "--resume", "aggregator_options": "--aggregator-option"}


def flag_for(field_name: str) -> str:
    """The ``dmhe train`` flag of a :class:`TrainConfig` field (``dp_epsilon`` ->
    ``--dp-epsilon``)."""
    if field_name in _EXTRA_FLAGS:
        return _EXTRA_FLAGS[field_name]
    return "--" + field_name.replace("_", "-")


def to_flags(message: str) -> str:
    """``message`` with config field names replaced by the CLI's flags: names with an
    underscore wherever they appear, one-word names where they start a statement about the
    setting (``lr must be ...``, ``threshold only applies ...``)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)} | set(_EXTRA_FLAGS)
    multi = sorted((n for n in names if "_" in n and n not in _NOT_FLAGS), key=len, reverse=True)
    if multi:
        message = re.sub(r"\b(" + "|".join(multi) + r")\b", lambda m: flag_for(m[1]), message)
    single = [n for n in names if "_" not in n]
    pattern = (
        r"(?<![-\w])(" + "|".join(single) + r")\b(?=( \(\w+\))? (must|only|needs)|=| or | given)"
    )
    message = re.sub(pattern, lambda m: flag_for(m[1]), message)
    quoted = "|".join(sorted(names, key=len, reverse=True))
    message = re.sub(r"'(" + quoted + r")'", lambda m: flag_for(m[1]), message)
    return re.sub(r"(?<![-\w])resume\b(?= needs)|(?<=pass )resume\b", "--resume", message)


def rounds_for_epochs(
    epochs: float, *, train_size: int, peers: int, local_steps: int, batch_size: int
) -> int:
    """Rounds that make ``epochs`` passes over each peer's partition: a round is
    ``local_steps`` batches of ``batch_size`` samples, a partition ``ceil(train_size /
    peers)`` samples, so ``rounds = ceil(epochs * partition / (local_steps * batch_size))``."""
    if not (epochs > 0 and math.isfinite(epochs)):
        raise ConfigError(f"epochs must be positive, got {epochs}")
    partition = math.ceil(train_size / peers)
    return max(1, math.ceil(epochs * partition / (local_steps * batch_size)))
