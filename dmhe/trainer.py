"""Decentralized training: K peers, FedAvg-style rounds, one aggregation strategy per mode.

One round (DESIGN.md §5): every peer starts from the common model, runs ``local_steps`` SGD steps
on its own data, and computes its update (new - old, over every floating-point entry of the
state dict: parameters and batch-norm statistics). The update is flattened, clipped to the
public bound, (for DP modes) given the peer's share of the Gaussian noise, quantized with the
public scale, and summed exactly by the aggregator. Everything after the exact integer sum is
deterministic, so the plaintext-quantized and encrypted modes produce bit-identical models.

In-process (the default) the K peers' local training runs one after the other in the main
thread, and only the aggregation runs on K transport threads. With a
:class:`~dmhe.transport.TorchDistributedTransport` (one process per peer, ``torchrun``) the same
round code runs with this process's single peer.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from dmhe import dp as dp_mod
from dmhe.aggregation import Aggregator, make_aggregator, ring_all_gather
from dmhe.data import DATASETS, DatasetBundle, DatasetError, load_dataset, split_indices
from dmhe.models import ModelError, build_model
from dmhe.quantize import check_no_wrap, clip_coordinates, clip_l2, dequantize, quantize
from dmhe.transport import InProcessNetwork, PeerDropped, Transport

__all__ = ["MODES", "ConfigError", "TrainConfig", "Trainer", "flatten_state", "load_flat_state"]

#: training mode -> (aggregator registry name, quantized?, differentially private?)
MODES: dict[str, tuple[str, bool, bool]] = {
    "plaintext": ("plaintext", False, False),
    "plaintext-quantized": ("plaintext", True, False),
    "dp": ("plaintext", True, True),
    "secagg": ("secagg", True, False),
    "encrypted": ("encrypted", True, False),
    "encrypted-dp": ("encrypted", True, True),
}
SECURE_MODES = ("secagg", "encrypted", "encrypted-dp")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_INFO = "run.json"
# Config fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = frozenset({"rounds", "out_dir", "device"})


class ConfigError(ValueError):
    """An impossible or unsafe training configuration, refused before training starts."""


@dataclass
class TrainConfig:
    dataset: str = "digits"
    model: str = "mlp"
    peers: int = 4
    rounds: int = 5
    local_steps: int = 1
    batch_size: int = 32
    lr: float = 0.1
    mode: str = "plaintext-quantized"
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
    data_dir: str | None = None
    download: bool = False
    drop_prob: float = 0.0
    max_retries: int = 3  # a round whose aggregation loses a needed peer is retried
    synthetic_shape: tuple[int, ...] = (1, 28, 28)
    synthetic_size: tuple[int, int] = (600, 200)
    aggregator_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["synthetic_shape"] = list(self.synthetic_shape)
        d["synthetic_size"] = list(self.synthetic_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        for key in ("synthetic_shape", "synthetic_size"):
            if key in d:
                d[key] = tuple(d[key])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with the reason if the configuration cannot run."""

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
                MODES[self.mode][0] == "encrypted",
                f"threshold only applies to encrypted modes, not {self.mode!r}",
            )
            need(
                1 <= self.threshold <= self.peers,
                f"threshold must be in [1, peers={self.peers}], got {self.threshold}",
            )
        need(0.0 <= self.drop_prob < 1.0, f"drop_prob must be in [0, 1), got {self.drop_prob}")
        need(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        if self.alpha is not None:
            need(self.alpha > 0, f"alpha (Dirichlet) must be positive, got {self.alpha}")
        need(self.device == "cpu" or self.device.startswith("cuda"), f"bad device {self.device!r}")
        if self.device.startswith("cuda"):
            need(torch.cuda.is_available(), f"device {self.device!r} asked but CUDA is unavailable")
        is_dp = MODES[self.mode][2]
        if is_dp:
            need(
                (self.dp_epsilon is None) != (self.dp_sigma is None),
                f"mode {self.mode!r} needs exactly one of dp_epsilon or dp_sigma",
            )
            if self.dp_epsilon is not None:
                need(self.dp_epsilon > 0, f"dp_epsilon must be positive: {self.dp_epsilon}")
            if self.dp_sigma is not None:
                need(self.dp_sigma > 0, f"dp_sigma must be positive: {self.dp_sigma}")
            need(0 < self.dp_delta < 1, f"dp_delta must be in (0, 1), got {self.dp_delta}")
        else:
            need(
                self.dp_epsilon is None and self.dp_sigma is None,
                f"dp_epsilon/dp_sigma given but mode {self.mode!r} adds no noise",
            )
        if MODES[self.mode][1]:
            try:
                # int64 headroom: the aggregator's own modulus is checked in Trainer.
                check_no_wrap(self.peers, self.clip, self.scale_bits, 1 << 64)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


# --------------------------------------------------------------------------- state helpers


def _float_keys(model: nn.Module) -> list[str]:
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def flatten_state(model: nn.Module, keys: list[str] | None = None) -> torch.Tensor:
    """Every floating-point state entry (parameters, batch-norm statistics), one float32 vector."""
    sd = model.state_dict()
    keys = _float_keys(model) if keys is None else keys
    return torch.cat([sd[k].detach().reshape(-1).to(torch.float32) for k in keys])


@torch.no_grad()
def load_flat_state(model: nn.Module, flat: torch.Tensor, keys: list[str] | None = None) -> None:
    sd = model.state_dict()
    keys = _float_keys(model) if keys is None else keys
    offset = 0
    for k in keys:
        n = sd[k].numel()
        sd[k].copy_(flat[offset : offset + n].view_as(sd[k]))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat state has {flat.numel()} values, model needs {offset}")


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _stream_seed(*parts: int) -> int:
    """A 63-bit seed derived from (seed, round, peer, purpose): independent streams per use."""
    data = b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Runs the rounds of one configuration; see the module docstring.

    ``transport``: None for the in-process simulation of all ``peers``; a transport whose
    ``world_size == peers`` to run as the single peer ``transport.rank`` (torch.distributed).
    ``log``: optional callable receiving every round's metrics dict.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        transport: Transport | None = None,
        log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        config.validate()
        self.config = cfg = config
        self.log = log
        self.agg_name, self.quantized, self.dp = MODES[cfg.mode]
        self.device = torch.device(cfg.device)

        if transport is None:
            self.network: InProcessNetwork | None = InProcessNetwork(
                cfg.peers, drop_prob=cfg.drop_prob, seed=_stream_seed(cfg.seed, -1, -1, 7)
            )
            self.transports: list[Transport] = list(self.network.transports)
            self.local_peers = list(range(cfg.peers))
        else:
            if transport.world_size != cfg.peers:
                raise ConfigError(
                    f"peers={cfg.peers} but the transport has world_size {transport.world_size}"
                )
            self.network = None
            self.transports = [transport]
            self.local_peers = [transport.rank]
        self.is_writer = 0 in self.local_peers
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None

        try:
            self.data: DatasetBundle = load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                download=cfg.download,
                synthetic_shape=cfg.synthetic_shape,
                synthetic_size=cfg.synthetic_size,
                seed=cfg.seed,
            )
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.shards = split_indices(
                self.data.train_targets, cfg.peers, alpha=cfg.alpha, seed=cfg.seed
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

        torch.manual_seed(_stream_seed(cfg.seed, -1, -1, 1))
        try:
            self.model = build_model(cfg.model, self.data.input_shape, self.data.num_classes)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        self.model.to(self.device)
        self.work_model = copy.deepcopy(self.model)
        self.keys = _float_keys(self.model)
        self.num_values = int(sum(self.model.state_dict()[k].numel() for k in self.keys))

        self.sigma: float | None = None
        if self.dp:
            self.sigma = cfg.dp_sigma or dp_mod.sigma_for_epsilon(
                cfg.dp_epsilon, rounds=cfg.rounds, delta=cfg.dp_delta
            )
            warnings.warn(
                "DP noise comes from torch's seeded, non-cryptographic generator: for "
                "experiments only",
                stacklevel=2,
            )

        options = dict(cfg.aggregator_options)
        if self.agg_name == "encrypted":
            options.setdefault("threshold", cfg.threshold)
            options.setdefault("device", cfg.device)
        try:
            self.aggregators: dict[int, Aggregator] = {
                r: make_aggregator(self.agg_name, cfg.peers, **options) for r in self.local_peers
            }
        except (ImportError, ValueError) as exc:  # incl. NoiseBudgetError, bad options
            raise ConfigError(f"aggregator {self.agg_name!r}: {exc}") from None
        agg0 = self.aggregators[self.local_peers[0]]
        self.sum_bound: int | None = None
        if self.quantized:
            extra = dp_mod.noise_tail_bound(self.sigma, cfg.clip) if self.dp else 0.0
            try:
                self.sum_bound = check_no_wrap(
                    cfg.peers, cfg.clip, cfg.scale_bits, agg0.modulus, extra=extra
                )
                if hasattr(agg0, "check"):
                    # one peer's value: its clipped update plus its share of the DP noise
                    value_bound = round(cfg.clip * 2**cfg.scale_bits) + (
                        math.ceil(
                            dp_mod.noise_tail_bound(self.sigma / math.sqrt(cfg.peers), cfg.clip)
                            * 2**cfg.scale_bits
                        )
                        if self.dp
                        else 0
                    )
                    agg0.check(
                        num_values=self.num_values,
                        sum_bound=self.sum_bound,
                        value_bound=value_bound,
                    )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.round = 0
        self.setup_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ collective steps

    def _collective(self, fn: Callable[[Transport], Any]) -> list[Any]:
        """Run ``fn(transport)`` for every local peer; results in ``self.local_peers`` order."""
        if self.network is not None:
            return self.network.run(fn)
        return [fn(self.transports[0])]

    def _bytes_sent(self) -> list[int]:
        return [t.total_bytes_sent for t in self.transports]

    def setup(self) -> None:
        """Collective set-up (keys): every peer must finish it; a dropout restarts it."""
        before = self._bytes_sent()
        t0 = time.perf_counter()
        retries = 0
        while True:
            try:
                results = self._collective(lambda t: self.aggregators[t.rank].setup(t))
                lost = [r for r in results if isinstance(r, PeerDropped)]
                if not lost:
                    break
                failure: PeerDropped = lost[0]
            except PeerDropped as exc:
                failure = exc
            retries += 1
            if retries > self.config.max_retries:
                raise RuntimeError(f"set-up failed {retries} times ({failure})") from failure
            if self.network is not None:
                self.network.revive_all()
        sent = [a - b for a, b in zip(self._bytes_sent(), before, strict=True)]
        self.setup_info = {
            "setup_seconds": time.perf_counter() - t0,
            "setup_bytes_per_peer": float(np.mean(sent)),
            "setup_retries": retries,
        }

    # ------------------------------------------------------------------ one round

    def _batches(self, peer: int, rnd: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(_stream_seed(self.config.seed, rnd, peer, 2))
        subset = Subset(self.data.train, self.shards[peer].tolist())
        loader = DataLoader(
            subset,
            batch_size=self.config.batch_size,
            sampler=RandomSampler(subset, generator=g),
        )
        while True:
            yield from loader

    def local_update(self, peer: int, rnd: int) -> torch.Tensor:
        """Peer ``peer``'s update (float32, flat) after local SGD from the common model."""
        cfg = self.config
        model = self.work_model
        model.load_state_dict(self.model.state_dict())
        model.train()
        torch.manual_seed(_stream_seed(cfg.seed, rnd, peer, 3))  # dropout layers, if any
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        loss_fn = nn.CrossEntropyLoss()
        batches = self._batches(peer, rnd)
        for _ in range(cfg.local_steps):
            x, y = next(batches)
            x, y = x.to(self.device), y.to(self.device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        return flatten_state(model, self.keys) - flatten_state(self.model, self.keys)

    def prepare(self, peer: int, rnd: int, update: torch.Tensor) -> np.ndarray:
        """Clip, add this peer's DP noise share, quantize: what the peer hands the aggregator."""
        cfg = self.config
        clipped = (clip_l2 if cfg.clip_kind == "l2" else clip_coordinates)(update, cfg.clip)
        x: torch.Tensor = clipped
        if self.dp:
            g = torch.Generator().manual_seed(_stream_seed(cfg.seed, rnd, peer, 4))
            x = dp_mod.add_noise_share(
                clipped, sigma=self.sigma, clip=cfg.clip, peers=cfg.peers, generator=g
            )
        if self.quantized:
            q = quantize(x, cfg.scale_bits)
            if getattr(self.aggregators.get(peer), "accepts_tensors", False):
                return q  # stays on its device: the aggregator takes it by DLPack
            return q.cpu().numpy()
        return x.double().cpu().numpy()

    def _aggregate(self, prepared: dict[int, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        quantized = self.quantized

        def body(t: Transport) -> tuple[np.ndarray, dict[str, float], int | None]:
            agg = self.aggregators[t.rank]
            if quantized:
                out = agg.allreduce_sum(t, prepared[t.rank])
            else:
                out = agg.allreduce_sum_float(t, prepared[t.rank])  # type: ignore[attr-defined]
            return out, dict(agg.timings), getattr(agg, "contributors", None)

        retries = 0
        if self.network is not None and self.network.dropped:
            self.network.revive_all()  # peers lost in the last round rejoin this one
        while True:
            try:
                results = self._collective(body)
                break
            except PeerDropped as exc:
                retries += 1
                if retries > self.config.max_retries:
                    raise RuntimeError(
                        f"round {self.round}: aggregation failed {retries} times ({exc})"
                    ) from exc
                if self.network is not None:
                    self.network.revive_all()
        live = [(p, r) for p, r in zip(self.local_peers, results, strict=True)]
        live = [(p, r) for p, r in live if not isinstance(r, PeerDropped)]
        if not live:
            raise RuntimeError(f"round {self.round + 1}: every local peer dropped out")
        results = [r for _, r in live]
        first = results[0][0]
        for p, r in live:
            if not np.array_equal(r[0], first):
                raise AssertionError(f"peer {p} obtained a different aggregate")
        timings = {
            key: float(np.mean([r[1].get(key, 0.0) for r in results]))
            for key in ("encrypt", "communicate", "decrypt")
        }
        contributors = results[0][2] or self.config.peers
        return first, {"timings": timings, "retries": retries, "contributors": contributors}

    def _check_identical(self) -> None:
        """Every peer holds the same parameters (in-process there is one copy by construction;
        across processes the digests are all-gathered and compared)."""
        if self.network is not None:
            return
        t = self.transports[0]
        digest = state_digest(self.model).encode()
        own = (t.rank + 1) % t.world_size
        # Reuse the ring: every peer ends with every peer's digest.
        digests = (
            ring_all_gather(t, own, digest, encode=lambda b: b, decode=lambda b, _i: b)
            if t.world_size > 1
            else [digest]
        )
        if len(set(digests)) != 1:
            raise AssertionError(f"peers disagree on the model after round {self.round}")

    def run_round(self) -> dict[str, Any]:
        cfg = self.config
        rnd = self.round + 1
        t_start = time.perf_counter()
        t0 = time.perf_counter()
        updates = {p: self.local_update(p, rnd) for p in self.local_peers}
        t_train = (time.perf_counter() - t0) / len(self.local_peers)
        t0 = time.perf_counter()
        prepared = {p: self.prepare(p, rnd, u) for p, u in updates.items()}
        t_quant = (time.perf_counter() - t0) / len(self.local_peers)

        before = self._bytes_sent()
        t0 = time.perf_counter()
        total, info = self._aggregate(prepared)
        t_agg = time.perf_counter() - t0
        sent = [a - b for a, b in zip(self._bytes_sent(), before, strict=True)]

        divisor = info["contributors"]
        if self.quantized:
            avg = dequantize(torch.from_numpy(total), cfg.scale_bits, divisor=divisor)
        else:
            avg = torch.from_numpy(total) / divisor
        new = flatten_state(self.model, self.keys).double() + avg.to(self.device)
        load_flat_state(self.model, new.to(torch.float32), self.keys)
        # Integer buffers (batch-norm step counters) advance identically on every peer.
        with torch.no_grad():
            sd, wd = self.model.state_dict(), self.work_model.state_dict()
            for k, v in sd.items():
                if not v.is_floating_point():
                    v.copy_(wd[k])
        self.round = rnd
        self._check_identical()

        t0 = time.perf_counter()
        acc, loss = self.evaluate()
        t_eval = time.perf_counter() - t0
        timings = info["timings"]
        agg_phases = timings["encrypt"] + timings["decrypt"]
        timings["communicate"] = timings["communicate"] or max(t_agg - agg_phases, 0.0)
        metrics = {
            "round": rnd,
            "mode": cfg.mode,
            "peers": cfg.peers,
            "accuracy": acc,
            "loss": loss,
            "time": {
                "train": t_train,
                "quantize": t_quant,
                **timings,
                "aggregate_wall": t_agg,
                "eval": t_eval,
                "round": time.perf_counter() - t_start,
            },
            "bytes_sent_per_peer": float(np.mean(sent)),
            "bytes_sent_max": int(max(sent)),
            "bytes_per_value": float(np.mean(sent)) / max(self.num_values, 1),
            "num_values": self.num_values,
            "retries": info["retries"],
            "contributors": info["contributors"],
        }
        if self.dp:
            metrics["dp_epsilon"] = dp_mod.epsilon(sigma=self.sigma, rounds=rnd, delta=cfg.dp_delta)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        loader = DataLoader(self.data.test, batch_size=1000)
        correct, total, loss_sum = 0, 0, 0.0
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            out = self.model(x)
            loss_sum += float(loss_fn(out, y))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
        return correct / max(total, 1), loss_sum / max(total, 1)

    # ------------------------------------------------------------------ runs, checkpoints

    def _write_run_info(self) -> None:
        assert self.out_dir is not None
        info = {
            "config": self.config.to_dict(),
            "num_values": self.num_values,
            "aggregator": self.agg_name,
            "modulus": str(self.aggregators[self.local_peers[0]].modulus),
            "sum_bound": self.sum_bound,
            "dp_sigma": self.sigma,
            "torch": torch.__version__,
            **self.setup_info,
        }
        _atomic_write_bytes(self.out_dir / RUN_INFO, json.dumps(info, indent=2).encode())

    def save_checkpoint(self) -> None:
        assert self.out_dir is not None
        import io

        buf = io.BytesIO()
        torch.save(
            {
                "round": self.round,
                "config": self.config.to_dict(),
                "model": self.model.state_dict(),
            },
            buf,
        )
        _atomic_write_bytes(self.out_dir / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self) -> bool:
        """Restore the model and round from ``out_dir``; False when there is no checkpoint."""
        if self.out_dir is None:
            raise ConfigError("resume needs out_dir")
        path = self.out_dir / CHECKPOINT
        if not path.exists():
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        old, new = ckpt["config"], self.config.to_dict()
        changed = {k for k in new if old.get(k) != new[k]} - _RESUMABLE_CHANGES
        if self.dp and old.get("rounds") != new["rounds"]:
            changed.add("rounds (the DP noise was calibrated for the original number)")
        if changed:
            raise ConfigError(f"cannot resume: config differs in {sorted(changed)}")
        self.model.load_state_dict(ckpt["model"])
        self.round = int(ckpt["round"])
        metrics = self.out_dir / METRICS
        if metrics.exists():  # drop rounds logged after the checkpoint (killed in between)
            lines = metrics.read_text().splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] <= self.round]
            _atomic_write_bytes(metrics, "".join(ln + "\n" for ln in kept).encode())
        return True

    def train(
        self, *, resume: bool = False, progress: bool = False, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        """Run the remaining rounds; returns their metrics. ``stop_after``: stop once this many
        rounds are done (simulates a killed run in tests)."""
        cfg = self.config
        if self.out_dir is not None and self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume and (self.out_dir / CHECKPOINT).exists():
                raise ConfigError(
                    f"{self.out_dir} already holds a run; pass resume or choose another out_dir"
                )
        if resume:
            self.load_checkpoint()
        self.setup()
        if self.out_dir is not None and self.is_writer:
            self._write_run_info()
        last = cfg.rounds if stop_after is None else min(cfg.rounds, stop_after)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.rounds, initial=self.round, desc=f"{cfg.mode} K={cfg.peers}")
        out = []
        while self.round < last:
            m = self.run_round()
            out.append(m)
            if self.out_dir is not None and self.is_writer:
                with open(self.out_dir / METRICS, "a") as f:
                    f.write(json.dumps(m) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                self.save_checkpoint()
            if self.log is not None:
                self.log(m)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    acc=f"{m['accuracy']:.3f}", kB=f"{m['bytes_sent_per_peer'] / 1e3:.0f}"
                )
        if bar is not None:
            bar.close()
        return out
