"""A model's floating-point state as one flat vector, its digest, and a checkpoint's digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["flatten_state", "float_keys", "load_flat_state", "payload_digest", "state_digest"]


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


def _digest_value(h: Any, value: Any) -> None:
    # Type tags keep distinct payloads from hashing alike (the tensor 1 vs the int 1, a dict
    # key vs a value).
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, Mapping):
        h.update(b"M" + len(value).to_bytes(8, "little"))
        for k in value:  # insertion order: a state dict's order is part of the model
            h.update(b"K" + json.dumps(k).encode())
            _digest_value(h, value[k])
    else:
        h.update(b"J" + json.dumps(value, sort_keys=True).encode())


def payload_digest(payload: Mapping[str, Any]) -> str:
    """BLAKE2b-256 (hex) over a checkpoint payload: every tensor's dtype, shape and bytes, every
    other entry's canonical JSON, and every key; any flipped byte or changed entry changes it.

    An integrity check against corruption and accidental edits, not a MAC: whoever can write the
    run directory can also recompute the digest.
    """
    h = hashlib.blake2b(digest_size=32, person=b"dmhe-ckpt-v1")
    _digest_value(h, payload)
    return h.hexdigest()
