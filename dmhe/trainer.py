"""Decentralized training: K peers, FedAvg-style rounds, one aggregation strategy per mode.

One round (DESIGN.md §5): every peer starts from the common model, runs ``local_steps`` SGD steps
on its own data, and computes its update (new - old, over every floating-point entry of the
state dict: parameters and batch-norm statistics). The update goes through the one update
pipeline (:mod:`dmhe.pipeline`: clip, DP noise share, quantize, aggregate, dequantize).
Everything after the exact integer sum is deterministic, so the plaintext-quantized and
encrypted modes produce bit-identical models.

In-process (the default) the K peers' local training runs one after the other in the main
thread, and only the aggregation runs on K transport threads. With a
:class:`~dmhe.transport.TorchDistributedTransport` (one process per peer, ``torchrun``) the same
round code runs with this process's single peer.

The configuration schema is :mod:`dmhe.config`, the run directory :mod:`dmhe.rundir`; their
public names are re-exported here for existing callers.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from dmhe.aggregators.base import Aggregator, make_aggregator
from dmhe.config import MODES, SECURE_MODES, ConfigError, TrainConfig, UpdateRefused
from dmhe.data import DatasetBundle, DatasetError, load_dataset, split_indices
from dmhe.dropouts import (
    after_loss,
    agree_digest,
    live_ring,
    live_round,
    lost_in_attempt,
    merge_results,
    retrying,
    threshold_below,
)
from dmhe.handshake import agree, run_settings
from dmhe.launch import RoundProgress
from dmhe.log import get_logger, run_estimate
from dmhe.models import ModelError, build_model, evaluate_model
from dmhe.pipeline import UpdatePipeline
from dmhe.rundir import CHECKPOINT, METRICS, RUN_INFO, RunDir, checkpoint_payload, run_info
from dmhe.state import flatten_state, float_keys, load_flat_state, state_digest
from dmhe.transport import InProcessNetwork, Transport

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "MODES",
    "RUN_INFO",
    "SECURE_MODES",
    "ConfigError",
    "TrainConfig",
    "Trainer",
    "UpdateRefused",
    "flatten_state",
    "load_flat_state",
    "state_digest",
]


def _stream_seed(*parts: int) -> int:
    """A 63-bit seed derived from (seed, round, peer, purpose): independent streams per use."""
    data = b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


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
        self._build_peers(transport)
        # the first live peer writes run.json and metrics (a restart may have lost peer 0)
        self.is_writer = writer = min(self.transports[0].reachable_peers()) in self.local_peers
        rank = None if transport is None else transport.rank
        self.run_dir = RunDir(cfg.out_dir, rank=rank, writer=writer) if cfg.out_dir else None
        self.resume_round: int | None = None  # the round to resume (agreed by dmhe.restart)
        self.out_dir = self.run_dir.path if self.run_dir else None
        self._build_data_and_model()

        self._dp_engines: dict[int, Any] = {}  # dp-sgd: one Opacus PrivacyEngine per peer
        shards = [len(s) for s in self.shards]
        self.pipeline = UpdatePipeline.for_config(cfg, self.num_values, shard_sizes=shards)
        self.sigma = self.pipeline.sigma
        options = {**self.pipeline.aggregator_options(), **cfg.aggregator_options}
        if self.agg_name == "encrypted":
            options.setdefault("threshold", cfg.threshold)
            options.setdefault("device", cfg.device)
            # the smudging's decryption budget D = rounds x ciphertexts for this model, every
            # retry of a round included (a retried round decrypts fresh ciphertexts)
            options.setdefault("rounds", cfg.rounds * (1 + cfg.max_retries))
            options.setdefault("values", self.pipeline.wire_values(self.num_values))
            if self.run_dir is not None:
                options.setdefault("journal_dir", str(self.run_dir.path / "journals"))
                if rank is not None:  # a process peer persists its keys: restartable
                    options.setdefault("key_dir", str(self.run_dir.rank_dir(rank)))
        try:
            self.aggregators: dict[int, Aggregator] = {
                r: make_aggregator(self.agg_name, cfg.peers, **options) for r in self.local_peers
            }
        except (ImportError, ValueError) as exc:  # incl. NoiseBudgetError
            raise ConfigError(f"aggregator {self.agg_name!r}: {exc}") from None
        self.sum_bound = self.pipeline.check(self.aggregators[self.local_peers[0]], self.num_values)
        self.round = 0
        self.setup_info: dict[str, Any] = {}
        self._start_error: str | None = None  # a refusal for the handshake to report (train)

    def _build_peers(self, transport: Transport | None) -> None:
        cfg = self.config
        if transport is None:
            # drop_prob is per peer per round (dmhe.dropouts), not per message
            self.network: InProcessNetwork | None = InProcessNetwork(
                cfg.peers, seed=_stream_seed(cfg.seed, -1, -1, 7)
            )
            self.transports: list[Transport] = list(self.network.transports)
            self.local_peers = list(range(cfg.peers))
            return
        if transport.world_size != cfg.peers:
            raise ConfigError(
                f"peers={cfg.peers} but the transport has world_size {transport.world_size}"
            )
        if cfg.drop_prob or cfg.setup_drop_prob:
            raise ConfigError("drop_prob simulates losses in-process; across processes kill one")
        self.network = None
        self.transports = [transport]
        self.local_peers = [transport.rank]

    def _build_data_and_model(self) -> None:
        cfg = self.config
        try:
            self.data: DatasetBundle = load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                download=cfg.download,
                synthetic_shape=cfg.synthetic_shape,
                synthetic_size=cfg.synthetic_size,
                seed=cfg.seed,
            )
            self.shards = split_indices(
                self.data.train_targets, cfg.peers, alpha=cfg.alpha, seed=cfg.seed
            )
        except (DatasetError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        torch.manual_seed(_stream_seed(cfg.seed, -1, -1, 1))
        try:
            self.model = build_model(cfg.model, self.data.input_shape, self.data.num_classes)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        self.model.to(self.device)
        self.work_model = copy.deepcopy(self.model)
        self.keys = float_keys(self.model)
        self.num_values = int(sum(self.model.state_dict()[k].numel() for k in self.keys))

    # ------------------------------------------------------------------ collective steps

    def _collective(self, fn: Callable[[Transport], Any]) -> list[Any]:
        """Run ``fn(transport)`` for every local peer; results in ``self.local_peers`` order."""
        if self.network is not None:
            return self.network.run(fn)
        return [fn(self.transports[0])]

    def _bytes_sent(self) -> list[int]:
        return [t.total_bytes_sent for t in self.transports]

    def _retrying(
        self,
        fn: Callable[[Transport], Any],
        what: str,
        *,
        everyone: bool,
        lost: Callable[[int], frozenset[int]] | None = None,
    ) -> tuple[list[Any], int]:
        """A collective step, restarted when it loses a needed peer (dropouts.retrying)."""
        cfg = self.config
        recover = partial(after_loss, self.network, self.transports[0], cfg.peers, cfg.threshold)
        return retrying(self._collective, fn, what, everyone=everyone, lost=lost,
                        max_retries=cfg.max_retries, recover=recover)  # fmt: skip

    def setup(self) -> None:
        """Collective set-up: the settings handshake (:mod:`dmhe.handshake`) before any other
        message, then keys (every peer must finish them; a dropout restarts them)."""
        agg = self.aggregators[self.local_peers[0]]  # every peer agrees before anything else
        settings = run_settings(self.config, agg, self.round, state_digest(self.model))
        self._collective(lambda t: agree(live_ring(t), settings, error=self._start_error))
        before = self._bytes_sent()
        t0 = time.perf_counter()
        cfg = self.config
        _, retries = self._retrying(
            lambda t: self.aggregators[t.rank].setup(t),
            "set-up",
            everyone=True,
            lost=partial(
                lost_in_attempt, cfg.seed, 0, peers=cfg.peers, prob=cfg.setup_drop_prob, setup=True
            ),
        )
        sent = [a - b for a, b in zip(self._bytes_sent(), before, strict=True)]
        self.setup_info.update(
            setup_seconds=time.perf_counter() - t0,
            setup_bytes_per_peer=float(np.mean(sent)),
            setup_retries=retries,
        )

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
        if cfg.mode == "dp-sgd":
            return self._dp_sgd_update(peer, rnd)
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

    def _dp_sgd_update(self, peer: int, rnd: int) -> torch.Tensor:
        """Peer ``peer``'s update after DP-SGD local steps (its own Opacus engine)."""
        from dmhe.privacy import private_local_update

        cfg = self.config
        g = torch.Generator().manual_seed(_stream_seed(cfg.seed, rnd, peer, 2))
        trained = private_local_update(
            self._dp_engines,
            peer,
            copy.deepcopy(self.model),
            Subset(self.data.train, self.shards[peer].tolist()),
            settings=self.pipeline.mechanism,  # type: ignore[arg-type]
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            generator=g,
            device=self.device,
            noise_seed=self.pipeline.noise_seed(cfg, rnd, peer),
        )
        return flatten_state(trained, self.keys) - flatten_state(self.model, self.keys)

    def prepare(self, peer: int, rnd: int, update: torch.Tensor) -> Any:
        """The pipeline's first stages for one peer: what it hands the aggregator. DP noise is
        keyed from os.urandom, or from the run seed when ``dp_reproducible`` (tests)."""
        seed = self.pipeline.noise_seed(self.config, rnd, peer)
        return self.pipeline.prepare(
            update, peer=peer, round_index=rnd, aggregator=self.aggregators[peer], noise_seed=seed
        )

    def _aggregate(self, prepared: dict[int, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """The round's sum over its live peers (the contributors), retried when an attempt
        loses a peer it needs (see :mod:`dmhe.dropouts`)."""
        cfg = self.config
        rnd = self.round + 1
        threshold = threshold_below(cfg.threshold, cfg.peers)
        before = state_digest(self.model)

        def body(t: Transport) -> tuple[list[int], np.ndarray, dict[str, float]]:
            agg = self.aggregators[t.rank]
            live, out = live_round(
                t,
                peers=cfg.peers,
                threshold=threshold,
                aggregate=lambda sub: self.pipeline.aggregate(agg, sub, prepared[t.rank]),
                tag=f"round{rnd}",  # unique: an attempt after a loss runs in a new epoch
                # across processes: same model before, same sum after
                check=None if self.network is not None else partial(agree_digest, before=before),
            )
            return live, out, dict(agg.timings)

        if self.network is not None and self.network.dropped:
            self.network.revive_all()  # peers lost in the last round rejoin this one
        lost = partial(lost_in_attempt, cfg.seed, rnd, peers=cfg.peers, prob=cfg.drop_prob)
        results, retries = self._retrying(
            body, f"round {rnd}: aggregation", everyone=False, lost=lost
        )
        first, contributors, timings = merge_results(results, rnd)
        return first, {"timings": timings, "retries": retries, "contributors": contributors}

    def _apply(self, avg: torch.Tensor) -> None:
        new = flatten_state(self.model, self.keys).double() + avg.to(self.device)
        load_flat_state(self.model, new.to(torch.float32), self.keys)
        # Integer buffers (batch-norm step counters) advance identically on every peer.
        with torch.no_grad():
            sd, wd = self.model.state_dict(), self.work_model.state_dict()
            for k, v in sd.items():
                if not v.is_floating_point():
                    v.copy_(wd[k])

    def run_round(self) -> dict[str, Any]:
        """One round for every local peer; returns its metrics. :class:`UpdateRefused` leaves
        the model and the round counter as they were."""
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
        self._apply(self.pipeline.finish(total, len(info["contributors"]), round_index=rnd))
        self.round = rnd  # (across processes the attempt compared the peers' digests)

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
        for t in self.transports:
            t.round_time(metrics["time"]["round"])
        eps = self.pipeline.epsilon(cfg.dp_delta, rnd)
        if eps is not None:
            metrics["dp_epsilon"] = eps
        return metrics

    def evaluate(self) -> tuple[float, float]:
        """``(accuracy, mean loss)`` of the common model on the test split."""
        return evaluate_model(self.model, self.data.test, self.device)

    # ------------------------------------------------------------------ runs, checkpoints

    def save_checkpoint(self) -> None:
        """Atomically store the round, the config, the model and the live peers (digested)."""
        assert self.run_dir is not None
        self.run_dir.save_checkpoint(checkpoint_payload(self))

    def load_checkpoint(self) -> bool:
        """Restore the model and round from ``out_dir`` after verifying the checkpoint's digest
        and round; False when there is none. Changes nothing on disk."""
        if self.run_dir is None:
            raise ConfigError("resume needs out_dir")
        rnd = self.run_dir.resume_into(self.model, self.config, self.device, self.resume_round)
        self.round = self.round if rnd is None else rnd
        return rnd is not None

    def train(
        self, *, resume: bool = False, progress: bool = False, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        """Run the remaining rounds; returns their metrics. ``stop_after``: stop once this many
        rounds are done (simulates a killed run in tests). A refused update
        (:class:`UpdateRefused`) propagates before that round is logged or checkpointed."""
        try:
            try:  # lock the run directory, verify and load the checkpoint
                if self.run_dir is not None:
                    self.run_dir.open(resume=resume)
                if resume:
                    self.load_checkpoint()
            except ConfigError as exc:
                self._start_error = str(exc)  # the handshake stops every peer with it
            return self._train(resume, progress, stop_after)
        finally:
            if self.run_dir is not None:
                self.run_dir.close()  # the lock is held for the run, not for the object

    def _train(self, resume: bool, progress: bool, stop_after: int | None) -> list[dict[str, Any]]:
        cfg = self.config
        writer = self.run_dir if self.run_dir is not None and self.is_writer else None
        self.setup()
        if writer is not None:
            if resume:  # only now that every peer agreed: a refused resume changes nothing
                writer.truncate_metrics(self.round)  # rounds logged after it (killed between)
            writer.write_info(run_info(self))
        last = cfg.rounds if stop_after is None else min(cfg.rounds, stop_after)
        bar = RoundProgress(cfg, self.round, enabled=progress and self.is_writer)  # rank 0's
        out = []
        while self.round < last:
            m = self.run_round()
            out.append(m)
            if writer is not None:
                writer.append_metrics(m)
            if self.run_dir is not None:
                self.save_checkpoint()  # every process peer keeps its own, in its rank folder
            if self.log is not None:
                self.log(m)
            estimate = run_estimate(out, cfg.rounds, self.setup_info) if self.is_writer else None
            if estimate and self.round < cfg.rounds:
                get_logger().info("%s", estimate)
            bar.update(m)
        bar.close()
        return out
