"""The Opacus-style front door: secure averaging for an existing training loop.

Every peer (one process per peer under ``torchrun``, or one thread per peer in
:func:`dmhe.simulate`) runs its usual loop; three added lines make it private::

    import dmhe
    engine = dmhe.SecureAggregationEngine(mode="encrypted")
    model, optimizer, loader = engine.make_secure(module=model, optimizer=optimizer,
                                                  data_loader=loader)
    for x, y in loader:               # unchanged
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()              # collective: every peer calls it the same number of times

The peers and the transport come from where the loop runs: the process group under ``torchrun``
(initialised here from its environment when the script has not done it: gloo on CPU, NCCL when
the module is on a GPU), or the simulated peer's transport inside :func:`dmhe.simulate`;
``transport=`` overrides both.

``local_steps=1`` (the default) averages the gradients at every ``step()``. ``local_steps=n``
runs n local optimizer steps, then averages the parameter change since the last aggregation
(FedAvg): every peer ends each aggregation with identical parameters, and the clip bound applies
to that change. Buffers (batch-norm statistics) stay local.

DP modes (``MODES[mode].dp``) need ``noise_multiplier``; :meth:`get_epsilon` reports the
privacy spent so far. Before each aggregation the peers compare their step counts: a peer that
is at another step, or whose loop has ended, stops every peer with :class:`StepMismatchError`
naming the ranks; under torchrun a peer that does not arrive within ``step_timeout`` seconds is
named too (gloo's monitored barrier), instead of a hang.

The returned optimizer is a real ``torch.optim.Optimizer`` sharing the wrapped one's
``param_groups`` and ``state``: LR schedulers drive it and ``state_dict`` round-trips.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from dmhe.aggregators.base import Aggregator, make_aggregator
from dmhe.collectives import all_gather_bytes
from dmhe.config import DP_MECHANISMS, MODES, ConfigError
from dmhe.engine_peers import default_transport, gloo_group, is_torch, ring_broadcast_state
from dmhe.pipeline import UpdatePipeline, no_wrap_bound
from dmhe.privacy import GaussianNoise
from dmhe.transport import PeerDropped, Transport

__all__ = ["ENGINE_MODES", "SecureAggregationEngine", "SecureOptimizer", "StepMismatchError"]

#: the modes of :data:`dmhe.config.MODES` the engine serves (DP ones need ``noise_multiplier``)
ENGINE_MODES = tuple(m for m in MODES if DP_MECHANISMS.get(m, "gaussian").startswith("gaussian"))

_STEP = struct.Struct("<qB")  # (optimizer steps so far, 1 if this peer's loop has ended)


class StepMismatchError(RuntimeError):
    """The peers called ``optimizer.step()`` different numbers of times (or one stopped)."""


def _describe(counts: list[tuple[int, int]]) -> str:
    parts = [
        f"peer {r} finished after {n} steps" if done else f"peer {r} is at step {n}"
        for r, (n, done) in enumerate(counts)
    ]
    return (
        "optimizer.step() counts differ between peers: "
        + ", ".join(parts)
        + "; every peer must call step() the same number of times"
    )


class SecureOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose ``step()`` averages over all peers: the gradients
    before every step (``local_steps=1``), or the parameter change after every
    ``local_steps``-th step.

    ``param_groups``, ``state`` and ``defaults`` are the wrapped optimizer's own objects, so a
    learning-rate scheduler on this optimizer changes the wrapped one, and ``state_dict`` /
    ``load_state_dict`` are the wrapped optimizer's. Other attributes are looked up on it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        params: list[nn.Parameter],
        aggregator: Aggregator,
        transport: Transport,
        pipeline: UpdatePipeline,
        local_steps: int = 1,
        step_timeout: float = 300.0,
        barrier_group: Any = None,
    ) -> None:
        self.original_optimizer = optimizer
        # the base initialiser sets up hooks and step bookkeeping; its groups are replaced below
        super().__init__(params, dict(optimizer.defaults))
        self._share()
        self._params = params
        self.aggregator = aggregator
        self.transport = transport
        self.pipeline = pipeline
        self.local_steps = local_steps
        self.step_timeout = step_timeout
        self._barrier_group = barrier_group
        self.steps = 0
        self.aggregations = 0
        self.finished = False
        self.broken = False  # a failed collective: the peers are out of step for good
        self.last_timings: dict[str, float] = {}
        self._anchor = self._flat_params() if local_steps > 1 else None

    def _share(self) -> None:
        opt = self.original_optimizer
        self.defaults, self.param_groups, self.state = opt.defaults, opt.param_groups, opt.state

    def __getattr__(self, name: str) -> Any:
        if name == "original_optimizer":
            raise AttributeError(name)
        return getattr(self.original_optimizer, name)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict."""
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the wrapped optimizer, then share its (new) groups and state again."""
        self.original_optimizer.load_state_dict(state_dict)
        self._share()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ step agreement

    def _agree(self, *, finished: bool = False) -> None:
        """Collective: every peer announces its step count; any difference stops all."""
        t = self.transport
        if self._barrier_group is not None or is_torch(t):
            import torch.distributed as dist

            try:
                dist.monitored_barrier(
                    self._barrier_group,
                    timeout=timedelta(seconds=self.step_timeout),
                    wait_all_ranks=True,
                )
            except RuntimeError as exc:
                ranks = re.findall(r"Ranks? ([\d, ]+) failed", str(exc))
                who = f"rank(s) {ranks[0].strip(', ')}" if ranks else "another peer"
                raise StepMismatchError(
                    f"peer {t.rank} at optimizer step {self.steps}: {who} did not reach it "
                    f"within {self.step_timeout:g} s (a different number of step() calls, a "
                    "stopped or a stuck peer)"
                ) from None
        try:
            blobs = all_gather_bytes(t, _STEP.pack(self.steps, int(finished)))
        except PeerDropped as exc:
            if exc.rank == t.rank:  # this peer itself was dropped: the others report it
                raise
            raise StepMismatchError(
                f"peer {t.rank} at optimizer step {self.steps}: peer {exc.rank} is gone"
            ) from None
        counts = [_STEP.unpack(b) for b in blobs]
        if len(set(counts)) != 1:
            raise StepMismatchError(f"peer {t.rank}: " + _describe(counts))

    def finish(self) -> None:
        """Collective, once at the end: the peers confirm equal step counts, so that a peer
        still waiting in a ``step()`` learns that another one has stopped."""
        if self.finished or self.broken:
            return
        self.finished = True
        self._agree(finished=True)
        if self.local_steps > 1 and self.steps % self.local_steps:
            import logging

            logging.getLogger("dmhe").warning(
                "%d local steps after the last aggregation were never averaged (steps=%d, "
                "local_steps=%d): the peers' models differ",
                self.steps % self.local_steps,
                self.steps,
                self.local_steps,
            )

    # ------------------------------------------------------------------ aggregation

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params]).clone()

    def _average(self, update: torch.Tensor) -> torch.Tensor:
        self._agree()
        self.aggregations += 1
        avg, self.last_timings = self.pipeline.average(
            self.aggregator,
            self.transport,
            update,
            round_index=self.aggregations,
        )
        return avg

    def _scatter(self, flat: torch.Tensor, *, into_grad: bool) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            v = flat[offset : offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
            if not into_grad:
                p.copy_(v)
            elif p.grad is None:
                p.grad = v
            else:
                p.grad.copy_(v)
            offset += n

    @torch.no_grad()
    def aggregate_gradients(self) -> None:
        """Collective: every parameter's gradient becomes the average over all peers."""
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in self._params
        ]
        self._scatter(self._average(torch.cat(grads)), into_grad=True)

    @torch.no_grad()
    def aggregate_parameters(self) -> None:
        """Collective: the parameters become the last common ones plus the average change."""
        assert self._anchor is not None
        change = self._flat_params() - self._anchor
        new = self._anchor.double() + self._average(change).to(self._anchor.device)
        self._anchor = new.to(self._anchor.dtype)
        self._scatter(self._anchor, into_grad=False)

    def step(self, closure: Any = None) -> Any:
        """One optimizer step with the averaging described in the class docstring."""
        if closure is not None:
            raise NotImplementedError("closures would re-run a collective step")
        if self.finished:
            raise StepMismatchError("step() after this peer's loop was declared finished")
        if self.broken:
            raise StepMismatchError("an earlier collective step failed: the peers are out of step")
        self.steps += 1
        try:
            if self.local_steps == 1:
                self.aggregate_gradients()
                return self.original_optimizer.step()
            out = self.original_optimizer.step()
            if self.steps % self.local_steps == 0:
                self.aggregate_parameters()
            return out
        except BaseException:
            self.broken = True
            raise


class SecureAggregationEngine:
    """Validates the secure-averaging settings and returns drop-in training objects.

    ``peers``: None (the default) takes the number from where :meth:`make_secure` runs (the
    process group, or :func:`dmhe.simulate`). ``noise_multiplier``: σ of the Gaussian noise in
    DP modes (in units of ``clip``, summed over the peers). ``step_timeout``: seconds a peer
    waits for the others at a step before all stop naming the late ranks.
    """

    def __init__(
        self,
        *,
        mode: str = "encrypted",
        peers: int | None = None,
        clip: float = 1.0,
        scale_bits: int = 16,
        clip_kind: str = "l2",
        threshold: int | None = None,
        local_steps: int = 1,
        noise_multiplier: float | None = None,
        step_timeout: float = 300.0,
        aggregator_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ENGINE_MODES:
            hint = " (its calibration needs the run: use `dmhe train`)" if mode in MODES else ""
            raise ConfigError(
                f"mode {mode!r} is not served by the engine{hint}; choose from "
                f"{', '.join(ENGINE_MODES)}"
            )
        if peers is not None and (not isinstance(peers, int) or peers < 2):
            raise ConfigError(f"secure averaging needs at least 2 peers, got {peers}")
        if threshold is not None and MODES[mode].aggregator != "encrypted":
            raise ConfigError("threshold only applies to the encrypted modes")
        if not isinstance(local_steps, int) or local_steps < 1:
            raise ConfigError(f"local_steps must be an integer >= 1, got {local_steps!r}")
        if MODES[mode].dp and not (noise_multiplier and noise_multiplier > 0):
            raise ConfigError(f"mode {mode!r} needs a positive noise_multiplier")
        if not MODES[mode].dp and noise_multiplier is not None:
            raise ConfigError(f"noise_multiplier given but mode {mode!r} adds no noise")
        if not step_timeout > 0:
            raise ConfigError(f"step_timeout must be positive, got {step_timeout}")
        self.mode, self.peers = mode, peers
        self.clip, self.scale_bits, self.clip_kind = clip, scale_bits, clip_kind
        self.local_steps, self.step_timeout = local_steps, step_timeout
        self.noise_multiplier = noise_multiplier
        self.options = dict(aggregator_options or {})
        if threshold is not None:
            self.options["threshold"] = threshold
        self.pipeline: UpdatePipeline | None = None
        self.optimizer: SecureOptimizer | None = None
        if peers is not None:
            self._build_pipeline(peers)

    def _build_pipeline(self, peers: int) -> UpdatePipeline:
        self.pipeline = UpdatePipeline(
            mode=self.mode,
            peers=peers,
            clip=self.clip,
            clip_kind=self.clip_kind,
            scale_bits=self.scale_bits,
            sigma=self.noise_multiplier,
        )
        if self.pipeline.quantized:  # int64 headroom now; the aggregator's modulus in make_secure
            mech = self.pipeline.mechanism
            noise = mech.sum_tail() if isinstance(mech, GaussianNoise) else 0.0
            no_wrap_bound(peers, self.clip, self.scale_bits, 1 << 64, noise)
        return self.pipeline

    def make_secure(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Iterable[Any],
        transport: Transport | None = None,
    ) -> tuple[nn.Module, SecureOptimizer, Iterable[Any]]:
        """Collective (every peer calls it): checks the settings, runs the aggregator's setup,
        and copies peer 0's initial parameters to every peer, so that all start identical."""
        if not isinstance(module, nn.Module):
            raise ConfigError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("module has no trainable parameters")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(f"optimizer must be a torch.optim.Optimizer, not {type(optimizer)}")
        module_ids = {id(p) for p in params}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in module_ids:
                    raise ConfigError("the optimizer holds a parameter that is not in the module")
        if not isinstance(data_loader, Iterable):
            raise ConfigError("data_loader must be iterable")
        from gpubfv.backend import Backend

        on_gpu = Backend.device_kind(params[0]) != "cpu"
        finish_hook = None
        if transport is None:
            transport, finish_hook = default_transport(on_gpu)
        if self.peers is None:
            if transport.world_size < 2:
                raise ConfigError(f"secure averaging needs >= 2 peers, got {transport.world_size}")
            self.peers = transport.world_size
            self._build_pipeline(self.peers)
        if transport.world_size != self.peers:
            raise ConfigError(
                f"engine built for {self.peers} peers, transport has {transport.world_size}"
            )
        assert self.pipeline is not None
        values = sum(p.numel() for p in params)
        options = dict(self.options)
        if MODES[self.mode].aggregator == "encrypted":  # the plan's budget D is per update size
            options.setdefault("values", values)
        try:
            aggregator = make_aggregator(MODES[self.mode].aggregator, self.peers, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"aggregator {MODES[self.mode].aggregator!r}: {exc}") from None
        self.pipeline.check(aggregator, values)
        aggregator.setup(transport)
        ring_broadcast_state(transport, module)
        wrapped = SecureOptimizer(
            optimizer,
            params=params,
            aggregator=aggregator,
            transport=transport,
            pipeline=self.pipeline,
            local_steps=self.local_steps,
            step_timeout=self.step_timeout,
            barrier_group=gloo_group() if is_torch(transport) else None,
        )
        self.optimizer = wrapped
        if finish_hook is not None:
            finish_hook(wrapped)
        return module, wrapped, data_loader

    def get_epsilon(self, delta: float) -> float:
        """The (ε, δ) privacy spent so far by this peer's aggregations (DP modes only)."""
        if not MODES[self.mode].dp:
            raise ConfigError(f"mode {self.mode!r} adds no DP noise: there is no epsilon")
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        if self.pipeline is None:
            raise ConfigError("get_epsilon before make_secure: the number of peers is unknown")
        accountant = getattr(self.pipeline, "epsilon", None)
        if accountant is None:
            raise NotImplementedError(
                "this dmhe's UpdatePipeline has no privacy accountant (UpdatePipeline.epsilon"
                "(delta, steps)); upgrade dmhe to use get_epsilon"
            )
        steps = self.optimizer.aggregations if self.optimizer is not None else 0
        eps = accountant(delta, steps)
        if eps is None:
            raise ConfigError(f"mode {self.mode!r}: the pipeline reports no epsilon")
        return float(eps)
