"""dmhe: decentralized training with exact secure aggregation of model updates.

Layers (imports point down): ``cli`` -> ``trainer``/``engine`` -> ``pipeline`` (clip, DP,
quantize, aggregate, dequantize) -> ``aggregators`` (one strategy per file; ``encrypted`` is the
only one that calls gpubfv) -> ``collectives`` (reduce-scatter, all-gather over a topology) ->
``transport``; ``config``, ``rundir``, ``state``, ``framing``, ``quantize``, ``dp``, ``data``
and ``models`` are leaves. Importing ``dmhe`` imports neither torch nor the crypto library: the
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SecureAggregationEngine": "dmhe.engine",
    "SecureOptimizer": "dmhe.engine",
    "Trainer": "dmhe.trainer",
    "TrainConfig": "dmhe.config",
    "ConfigError": "dmhe.config",
    "UpdateRefused": "dmhe.config",
    "MODES": "dmhe.config",
    "flatten_state": "dmhe.state",
    "load_flat_state": "dmhe.state",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Load the public names on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmhe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
