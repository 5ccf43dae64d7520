"""The Opacus-style front door: secure gradient averaging for an existing training loop.

Every peer (one process per peer with torch.distributed, or one thread per peer in a simulation)
runs its usual loop; the optimizer returned by :meth:`SecureAggregationEngine.make_secure`
replaces each ``step()``'s local gradient by the exact average of all peers' clipped, quantized
gradients, obtained through the update pipeline (:mod:`dmhe.pipeline`) and the chosen
aggregator::

    engine = SecureAggregationEngine(mode="encrypted", peers=4, clip=1.0, scale_bits=16)
    model, optimizer, loader = engine.make_secure(
        module=model, optimizer=optimizer, data_loader=loader, transport=transport
    )
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()  # collective: every peer must call it the same number of times

The returned optimizer is a real ``torch.optim.Optimizer`` sharing the wrapped one's
``param_groups`` and ``state``: LR schedulers drive it and ``state_dict`` round-trips.
Validation happens in the constructor and in ``make_secure``, before any training step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from dmhe.aggregators.base import Aggregator, make_aggregator
from dmhe.config import MODES, ConfigError
from dmhe.pipeline import UpdatePipeline, no_wrap_bound
from dmhe.state import flatten_state, load_flat_state
from dmhe.transport import Transport

__all__ = ["ENGINE_MODES", "SecureAggregationEngine", "SecureOptimizer"]

#: the modes of :data:`dmhe.config.MODES` the engine serves (no DP: its noise needs the
#: trainer's per-round accounting)
ENGINE_MODES = tuple(name for name, mode in MODES.items() if not mode.dp)


class SecureOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose ``step()`` first replaces the gradients by the exact
    average over all peers, then runs the wrapped optimizer's step.

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
    ) -> None:
        self.original_optimizer = optimizer
        # the base initialiser sets up hooks and step bookkeeping; its groups are replaced below
        super().__init__(params, dict(optimizer.defaults))
        self._share()
        self._params = params
        self.aggregator = aggregator
        self.transport = transport
        self.pipeline = pipeline
        self.steps = 0
        self.last_timings: dict[str, float] = {}

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

    @torch.no_grad()
    def aggregate_gradients(self) -> None:
        """Collective: every parameter's gradient becomes the average over all peers."""
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in self._params
        ]
        self.steps += 1
        avg, self.last_timings = self.pipeline.average(
            self.aggregator, self.transport, torch.cat(grads), round_index=self.steps
        )
        offset = 0
        for p in self._params:
            n = p.numel()
            g = avg[offset : offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
            offset += n

    def step(self, closure: Any = None) -> Any:
        """Average the gradients over all peers, then the wrapped optimizer's step."""
        if closure is not None:
            raise NotImplementedError("closures would re-run a collective step")
        self.aggregate_gradients()
        return self.original_optimizer.step()


class SecureAggregationEngine:
    """Validates the secure-averaging settings and returns drop-in training objects."""

    def __init__(
        self,
        *,
        mode: str = "encrypted",
        peers: int,
        clip: float = 1.0,
        scale_bits: int = 16,
        clip_kind: str = "l2",
        threshold: int | None = None,
        aggregator_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ENGINE_MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(ENGINE_MODES)}")
        if not isinstance(peers, int) or peers < 2:
            raise ConfigError(f"secure averaging needs at least 2 peers, got {peers}")
        if threshold is not None and MODES[mode].aggregator != "encrypted":
            raise ConfigError("threshold only applies to the encrypted mode")
        self.mode = mode
        self.peers = peers
        self.pipeline = UpdatePipeline(
            mode=mode, peers=peers, clip=clip, clip_kind=clip_kind, scale_bits=scale_bits
        )
        self.clip, self.scale_bits, self.clip_kind = clip, scale_bits, clip_kind
        self.options = dict(aggregator_options or {})
        if threshold is not None:
            self.options["threshold"] = threshold
        if self.pipeline.quantized:  # int64 headroom now; the aggregator's modulus in make_secure
            no_wrap_bound(peers, clip, scale_bits, 1 << 64)

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
        if transport is None:
            transport = _default_transport()
        if transport.world_size != self.peers:
            raise ConfigError(
                f"engine built for {self.peers} peers, transport has {transport.world_size}"
            )
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
        options = dict(self.options)
        if MODES[self.mode].aggregator == "encrypted":  # the plan's budget D is per update size
            options.setdefault("values", sum(p.numel() for p in params))
        try:
            aggregator = make_aggregator(MODES[self.mode].aggregator, self.peers, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"aggregator {MODES[self.mode].aggregator!r}: {exc}") from None
        self.pipeline.check(aggregator, sum(p.numel() for p in params))
        aggregator.setup(transport)
        _ring_broadcast_state(transport, module)
        wrapped = SecureOptimizer(
            optimizer,
            params=params,
            aggregator=aggregator,
            transport=transport,
            pipeline=self.pipeline,
        )
        return module, wrapped, data_loader


def _default_transport() -> Transport:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from dmhe.transport import TorchDistributedTransport

        return TorchDistributedTransport()
    raise ConfigError(
        "no transport: pass transport=..., or initialise torch.distributed (torchrun)"
    )


def _ring_broadcast_state(transport: Transport, module: nn.Module) -> None:
    """Peer 0's floating-point state travels once around the ring (each peer sends it once)."""
    k, r = transport.world_size, transport.rank
    if k == 1:
        return
    flat = flatten_state(module)
    if r == 0:
        transport.send(1, flat.cpu().numpy().astype("<f4").tobytes())
        return
    buf = transport.recv(r - 1)
    if r + 1 < k:
        transport.send(r + 1, buf)
    load_flat_state(module, torch.from_numpy(np.frombuffer(buf, dtype="<f4").copy()))
