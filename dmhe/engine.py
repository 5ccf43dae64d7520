"""The Opacus-style front door: secure gradient averaging for an existing training loop.

Every peer (one process per peer with torch.distributed, or one thread per peer in a simulation)
runs its usual loop; the optimizer returned by :meth:`SecureAggregationEngine.make_secure`
replaces each ``step()``'s local gradient by the exact average of all peers' clipped, quantized
gradients, obtained through the chosen aggregator::

    engine = SecureAggregationEngine(mode="encrypted", peers=4, clip=1.0, scale_bits=16)
    model, optimizer, loader = engine.make_secure(
        module=model, optimizer=optimizer, data_loader=loader, transport=transport
    )
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()  # collective: every peer must call it the same number of times

Validation happens in ``make_secure``, before any training step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from dmhe.aggregation import Aggregator, make_aggregator
from dmhe.quantize import check_no_wrap, clip_coordinates, clip_l2, dequantize, quantize
from dmhe.trainer import ConfigError, flatten_state, load_flat_state
from dmhe.transport import Transport

__all__ = ["SecureAggregationEngine", "SecureOptimizer"]

_ENGINE_MODES = {
    "plaintext": "plaintext",
    "plaintext-quantized": "plaintext",
    "secagg": "secagg",
    "encrypted": "encrypted",
}


class SecureOptimizer:
    """Wraps a ``torch.optim.Optimizer``; ``step()`` first replaces the gradients by the exact
    average over all peers. Other attributes are the wrapped optimizer's."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        params: list[nn.Parameter],
        aggregator: Aggregator,
        transport: Transport,
        clip: float,
        clip_kind: str,
        scale_bits: int,
    ) -> None:
        self.original_optimizer = optimizer
        self._params = params
        self.aggregator = aggregator
        self.transport = transport
        self.clip = clip
        self._clip_fn = clip_l2 if clip_kind == "l2" else clip_coordinates
        self.scale_bits = scale_bits
        self.last_timings: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original_optimizer, name)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def aggregate_gradients(self) -> None:
        t0 = time.perf_counter()
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in self._params
        ]
        flat = torch.cat(grads)
        q = quantize(self._clip_fn(flat, self.clip), self.scale_bits)
        if not getattr(self.aggregator, "accepts_tensors", False):
            q = q.cpu().numpy()  # else it stays on its device (DLPack hand-off)
        t1 = time.perf_counter()
        total = self.aggregator.allreduce_sum(self.transport, q)
        t2 = time.perf_counter()
        avg = dequantize(
            torch.from_numpy(np.asarray(total)), self.scale_bits, self.transport.world_size
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
        self.last_timings = {
            "quantize": t1 - t0,
            "aggregate": t2 - t1,
            **self.aggregator.timings,
        }

    def step(self, closure: Any = None) -> Any:
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
        if mode not in _ENGINE_MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(_ENGINE_MODES)}")
        if peers < 2:
            raise ConfigError(f"secure averaging needs at least 2 peers, got {peers}")
        if clip_kind not in ("l2", "coordinate"):
            raise ConfigError(f"clip_kind must be 'l2' or 'coordinate', got {clip_kind!r}")
        if threshold is not None and _ENGINE_MODES[mode] != "encrypted":
            raise ConfigError("threshold only applies to the encrypted mode")
        self.mode = mode
        self.peers = peers
        self.clip = clip
        self.scale_bits = scale_bits
        self.clip_kind = clip_kind
        self.options = dict(aggregator_options or {})
        if threshold is not None:
            self.options["threshold"] = threshold
        try:  # int64 headroom first; the aggregator's modulus is checked in make_secure
            check_no_wrap(peers, clip, scale_bits, 1 << 64)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

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
        aggregator: Aggregator = make_aggregator(
            _ENGINE_MODES[self.mode], self.peers, **self.options
        )
        try:
            bound = check_no_wrap(self.peers, self.clip, self.scale_bits, aggregator.modulus)
            if hasattr(aggregator, "check"):
                n = sum(p.numel() for p in params)
                aggregator.check(num_values=n, sum_bound=bound)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        aggregator.setup(transport)
        _ring_broadcast_state(transport, module)
        wrapped = SecureOptimizer(
            optimizer,
            params=params,
            aggregator=aggregator,
            transport=transport,
            clip=self.clip,
            clip_kind=self.clip_kind,
            scale_bits=self.scale_bits,
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
