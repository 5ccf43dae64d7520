"""dmhe: decentralized training with exact secure aggregation of model updates.

The front door is :class:`SecureAggregationEngine` (``make_secure(module=, optimizer=,
data_loader=)`` returns drop-ins; peers come from ``torchrun`` or from :func:`simulate`, which
runs K reproducible in-process peers), and the ``dmhe`` command (``dmhe.cli``).

Layers (imports point down): ``cli`` -> ``trainer``/``engine`` -> ``pipeline`` (clip, DP,
quantize, aggregate, dequantize) -> ``aggregators`` (one strategy per file; ``encrypted`` is the
only one that calls gpubfv) -> ``collectives`` (reduce-scatter, all-gather over a topology) ->
``transport``; ``config``, ``rundir``, ``state``, ``framing``, ``quantize``, ``dp``, ``data``
and ``models`` are leaves. Importing ``dmhe`` imports neither torch nor the crypto library: the
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from typing import Any


def _version(dist: str) -> str:
    try:
        return _pkg_version(dist)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version("gpubfv")  # the one place: pyproject.toml

_LAZY = {
    "SecureAggregationEngine": "dmhe.engine",
    "SecureOptimizer": "dmhe.engine",
    "StepMismatchError": "dmhe.engine",
    "simulate": "dmhe.simulation",
    "Peer": "dmhe.simulation",
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
