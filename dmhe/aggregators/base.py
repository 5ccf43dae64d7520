"""The aggregation strategy interface, its option schemas and the registry.

A strategy (:class:`Aggregator`) is per peer and separate from the transport (how bytes move),
as in Flower. Every strategy returns the exact int64 sum over all peers, identical on every
peer. The protocol declares every member that the pipeline, the trainer and the engine use, so
no caller probes for optional members. :class:`AggregatorBase` gives the common defaults.

Every strategy declares its options (:class:`Option`: name, type, range, default, help) in
``OPTIONS``; :func:`make_aggregator` refuses unknown names and out-of-range values with a
:class:`~dmhe.config.ConfigError` that lists the valid names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from dmhe.collectives import Topology
from dmhe.config import ConfigError
from dmhe.netmodel import PROFILES
from dmhe.topologies import TOPOLOGY_NAMES, make_topology
from dmhe.transport import Transport

__all__ = [
    "AGGREGATORS",
    "INT64_MODULUS",
    "Aggregator",
    "AggregatorBase",
    "Option",
    "check_int64",
    "get_aggregator_class",
    "make_aggregator",
    "validate_options",
]

#: The int64 sums wrap modulo 2**64; a sum is exact when its magnitude stays below 2**63.
INT64_MODULUS = 1 << 64


@dataclass(frozen=True)
class Option:
    """One aggregator option: ``types`` accepted (``None`` allowed when in ``types`` as
    ``type(None)``), an inclusive ``low``..``high`` range for numbers, ``default`` and ``help``.
    ``item`` is the element type of a list option."""

    name: str
    types: tuple[type, ...]
    default: Any
    help: str
    low: int | float | None = None
    high: int | float | None = None
    item: type | None = None
    choices: tuple[str, ...] | None = None

    def check(self, owner: str, value: Any) -> Any:
        """``value`` if it fits this option, else :class:`ConfigError` naming the rule."""
        if isinstance(value, bool) and bool not in self.types:
            raise ConfigError(f"{owner} option {self.name}: expected {self._kind()}, got {value!r}")
        if not isinstance(value, self.types):
            raise ConfigError(f"{owner} option {self.name}: expected {self._kind()}, got {value!r}")
        if isinstance(value, (int, float)):  # the only kinds that carry a range
            if self.low is not None and value < self.low:
                raise ConfigError(f"{owner} option {self.name}={value!r} below {self.low}")
            if self.high is not None and value > self.high:
                raise ConfigError(f"{owner} option {self.name}={value!r} above {self.high}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{owner} option {self.name}={value!r}: choose one of {', '.join(self.choices)}"
            )
        if self.item is not None and isinstance(value, (list, tuple)):
            bad = [v for v in value if not isinstance(v, self.item) or isinstance(v, bool)]
            if bad:
                raise ConfigError(f"{owner} option {self.name}: items must be {self.item.__name__}")
        return value

    def _kind(self) -> str:
        names = [("None" if t is type(None) else t.__name__) for t in self.types]
        rng = f" in {self.low}..{self.high}" if self.low is not None else ""
        return " or ".join(names) + rng


def validate_options(
    owner: str, schema: tuple[Option, ...], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Checked options, defaults filled in; unknown names raise :class:`ConfigError`."""
    by_name = {o.name: o for o in schema}
    unknown = sorted(set(options) - set(by_name))
    if unknown:
        valid = ", ".join(sorted(by_name)) or "none"
        raise ConfigError(f"unknown {owner} option(s) {', '.join(unknown)}; valid: {valid}")
    return {o.name: o.check(owner, options.get(o.name, o.default)) for o in schema}


#: the collective schedule, shared by every strategy (``auto``: lowest predicted round time
#: for K and the link profile; every topology gives the ring's result bit for bit)
TOPOLOGY_OPTIONS = (
    Option("topology", (str,), "ring", "collective schedule", choices=TOPOLOGY_NAMES),
    Option("link", (str,), "internet", "link profile for topology=auto", choices=tuple(PROFILES)),
)


def check_int64(values: Any) -> np.ndarray:
    """``values`` as a 1-D int64 numpy array, else ``TypeError``."""
    values = np.asarray(values)
    if values.dtype != np.int64 or values.ndim != 1:
        raise TypeError(f"values must be a 1-D int64 array, got {values.dtype} {values.shape}")
    return values


@runtime_checkable
class Aggregator(Protocol):
    """Per-peer aggregation strategy.

    Attributes:
        name: registry name.
        modulus: the sum is computed modulo this integer; it is exact when every coordinate of
            the true sum lies in ``(-modulus/2, modulus/2)`` (checked up front by the pipeline).
        timings: seconds spent in phases of the last ``allreduce_sum`` call, keys among
            ``"encrypt"``, ``"communicate"``, ``"decrypt"``. The strategy clears and fills it.
        contributors: how many peers' values the last sum holds (the divisor of the average).
        accepts_tensors: whether ``allreduce_sum`` takes torch tensors on their device.
    """

    name: str
    modulus: int
    timings: dict[str, float]
    contributors: int
    accepts_tensors: bool

    def setup(self, transport: Transport) -> None:
        """Once, collectively, before the first round (keys, ...)."""
        ...

    def check(self, *, num_values: int, sum_bound: int, value_bound: int | None = None) -> None:
        """Raise ``ValueError`` before training if the K-fold sum or one value cannot fit."""
        ...

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        """``values``: int64, 1-D, same length on every peer. Returns the exact int64 sum."""
        ...

    def allreduce_sum_float(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """Float64 sum, for unquantized training; strategies that cannot raise ``TypeError``."""
        ...

    def describe(self) -> str:
        """One line for logs and run.json."""
        ...

    def security(self) -> dict[str, Any]:
        """What the strategy's privacy rests on, for run.json (empty when it hides nothing)."""
        ...


class AggregatorBase:
    """Defaults shared by the strategies: no set-up, int64 modulus, no float path."""

    name: ClassVar[str] = "base"
    OPTIONS: ClassVar[tuple[Option, ...]] = TOPOLOGY_OPTIONS
    modulus: int = INT64_MODULUS
    accepts_tensors: bool = False

    def __init__(self, world_size: int | None = None, **options: Any) -> None:
        if world_size is not None and (not isinstance(world_size, int) or world_size < 1):
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        self.k = world_size
        self.options = validate_options(self.name, self.OPTIONS, options)
        self.timings: dict[str, float] = {}
        self.contributors = world_size or 0

    def setup(self, transport: Transport) -> None:
        """No collective set-up."""

    def topology_for(self, k: int, payload_bytes: int, passes: int = 2) -> Topology:
        """The collective schedule of the ``topology`` option for ``k`` peers moving
        ``payload_bytes`` per peer in ``passes`` collectives (``auto`` weighs them)."""
        return make_topology(
            self.options["topology"], k, self.options["link"], payload_bytes, passes
        )

    def check(self, *, num_values: int, sum_bound: int, value_bound: int | None = None) -> None:
        """Each value is summed as it is, so the pipeline's no-wrap check modulo ``modulus``
        covers the sum and every value; only an empty update is refused here."""
        if num_values < 1:
            raise ValueError("nothing to aggregate")

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        """Implemented by every strategy."""
        raise NotImplementedError

    def allreduce_sum_float(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """Only the plaintext baseline sums floats."""
        raise TypeError(f"aggregator {self.name!r} sums quantized integers only")

    def describe(self) -> str:
        """The registry name and the options."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})"

    def security(self) -> dict[str, Any]:
        """Nothing is hidden by default."""
        return {}


def _lazy(module: str, attr: str) -> Callable[[], type]:
    def load() -> type:
        return getattr(importlib.import_module(module), attr)

    load.__qualname__ = f"lazy({module}.{attr})"
    return load


#: registry name -> aggregator class, or a zero-argument loader returning the class (so that
#: the plaintext baselines work without the crypto library).
AGGREGATORS: dict[str, type | Callable[[], type]] = {
    "plaintext": _lazy("dmhe.aggregators.plaintext", "PlaintextAggregator"),
    "dp": _lazy("dmhe.aggregators.dp", "DPAggregator"),
    "secagg": _lazy("dmhe.aggregators.secagg", "PairwiseMaskAggregator"),
    "encrypted": _lazy("dmhe.aggregators.encrypted", "EncryptedAggregator"),
}


def get_aggregator_class(name: str) -> type:
    """The class registered as ``name``; ``ValueError`` if unknown, ``ImportError`` if its
    dependencies are missing."""
    try:
        entry = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {sorted(AGGREGATORS)}") from None
    if isinstance(entry, type):
        return entry
    try:
        return entry()
    except ImportError as exc:
        raise ImportError(f"aggregator {name!r} is not available: {exc}") from exc


def make_aggregator(name: str, world_size: int, **options: Any) -> Aggregator:
    """One per-peer strategy instance: ``cls(world_size, **options)`` with checked options."""
    return get_aggregator_class(name)(world_size, **options)
