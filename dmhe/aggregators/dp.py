"""The distributed-DP baseline: noised, quantized updates summed in the clear.

Each peer's Gaussian noise share is added by the update pipeline (``dmhe.pipeline``, the same
step that the encrypted-DP mode uses), so this strategy sees already-noised values: it differs
from :class:`~dmhe.aggregators.plaintext.PlaintextAggregator` in what its sum means (the
Gaussian mechanism on the clipped sum, accounted by ``dmhe.dp``), and in refusing the float
path, where no calibrated noise exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmhe.aggregators.plaintext import PlaintextAggregator
from dmhe.transport import Transport

__all__ = ["DPAggregator"]


class DPAggregator(PlaintextAggregator):
    """Ring sum of DP-noised quantized updates (the noise is the pipeline's step). No options."""

    name = "dp"

    def allreduce_sum_float(self, transport: Transport, values: Any) -> np.ndarray:
        """Refused: the DP mode is quantized, so that the sum is exact."""
        raise TypeError("the dp aggregator sums quantized integers only")
