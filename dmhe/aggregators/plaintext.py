"""The plaintext baseline: a ring all-reduce of the updates in the clear (no privacy)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dmhe.aggregators.base import AggregatorBase, check_int64
from dmhe.collectives import all_reduce_array
from dmhe.transport import Transport

__all__ = ["PlaintextAggregator"]


class PlaintextAggregator(AggregatorBase):
    """Ring all-reduce of the int64 updates in the clear: the baseline with no privacy. Also
    sums float64 updates for unquantized training. No options."""

    name = "plaintext"

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        """The exact int64 sum (wrapping modulo 2**64, which the no-wrap check excludes)."""
        return self._sum(transport, check_int64(values))

    def allreduce_sum_float(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        """Float ring all-reduce for unquantized plaintext training."""
        return self._sum(transport, np.asarray(values, dtype=np.float64))

    def _sum(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        self.timings.clear()
        self.contributors = transport.world_size
        t0 = time.perf_counter()
        out = all_reduce_array(
            transport, values, self.topology_for(transport.world_size, values.nbytes)
        )
        self.timings["communicate"] = time.perf_counter() - t0
        return out
