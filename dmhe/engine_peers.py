"""Where the engine's peers come from: the simulated peer of :func:`dmhe.simulate`, or the
``torch.distributed`` process group (initialised from torchrun's environment when the script has
not done it), and what happens at the end of a torchrun script (the last step check, pending
sends, the process group). Also the one-time copy of peer 0's initial state to every peer."""

from __future__ import annotations

import atexit
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from dmhe.config import ConfigError
from dmhe.state import flatten_state, load_flat_state
from dmhe.transport import Transport

__all__ = ["default_transport", "gloo_group", "is_torch", "ring_broadcast_state"]


def is_torch(transport: Transport) -> bool:
    """Whether ``transport`` is a torch.distributed one."""
    from dmhe.transport import TorchDistributedTransport

    return isinstance(transport, TorchDistributedTransport)


def gloo_group() -> Any:
    """The group for the monitored barrier (gloo only): the default one when it is gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def default_transport(on_gpu: bool) -> tuple[Transport, Any]:
    """The simulated peer's transport, or the process group's (initialised from torchrun's
    environment if needed); second: how to register the optimizer's end-of-run check."""
    from dmhe.simulation import current_peer

    peer = current_peer()
    if peer is not None:
        return peer.transport, lambda opt: peer.on_finish(opt.finish)
    import torch.distributed as dist

    owned = False
    if dist.is_available() and not dist.is_initialized() and "WORLD_SIZE" in os.environ:
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
        owned = True
    if dist.is_available() and dist.is_initialized():
        from dmhe.transport import TorchDistributedTransport

        transport = TorchDistributedTransport()

        def register(opt: Any) -> None:
            atexit.register(_finish_at_exit, opt, transport, owned)

        return transport, register
    raise ConfigError(
        "no peers: run under torchrun, inside dmhe.simulate(K, fn), or pass transport=..."
    )


def _finish_at_exit(opt: Any, transport: Transport, owned: bool) -> None:
    """At interpreter exit (torchrun): the end-of-run step check, pending sends, and the
    process group this engine created."""
    import logging

    import torch.distributed as dist

    try:
        opt.finish()
        transport.barrier()
    except Exception as exc:  # exit is too late to raise; the message must still be seen
        logging.getLogger("dmhe").error("dmhe: error: %s", exc)
        os._exit(1)
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def ring_broadcast_state(transport: Transport, module: nn.Module) -> None:
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
