"""A model's floating-point state as one flat vector, and its digest."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["flatten_state", "float_keys", "load_flat_state", "state_digest"]


def float_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of floating-point entries (parameters, batch-norm statistics)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def flatten_state(model: nn.Module, keys: list[str] | None = None) -> torch.Tensor:
    """Every floating-point state entry (parameters, batch-norm statistics), one float32 vector."""
    sd = model.state_dict()
    keys = float_keys(model) if keys is None else keys
    return torch.cat([sd[k].detach().reshape(-1).to(torch.float32) for k in keys])


@torch.no_grad()
def load_flat_state(model: nn.Module, flat: torch.Tensor, keys: list[str] | None = None) -> None:
    """Copy ``flat`` (as made by :func:`flatten_state`) back into the model's state."""
    sd = model.state_dict()
    keys = float_keys(model) if keys is None else keys
    offset = 0
    for k in keys:
        n = sd[k].numel()
        sd[k].copy_(flat[offset : offset + n].view_as(sd[k]))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat state has {flat.numel()} values, model needs {offset}")


def state_digest(model: nn.Module) -> str:
    """SHA-256 over every state entry's name and bytes: equal digests, equal models."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
