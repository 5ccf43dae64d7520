"""Compatibility names for the aggregation strategies and the ring helpers.

The strategies live in :mod:`dmhe.aggregators` (one file each), the collectives in
:mod:`dmhe.collectives`. The functions here keep the earlier keyword signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from dmhe.aggregators.base import (
    AGGREGATORS,
    INT64_MODULUS,
    Aggregator,
    get_aggregator_class,
    make_aggregator,
)
from dmhe.aggregators.plaintext import PlaintextAggregator
from dmhe.aggregators.secagg import (
    MODP_2048_G,
    MODP_2048_P,
    PairwiseMaskAggregator,
    _KeyAgreement,
    expand_mask,
)
from dmhe.collectives import Codec, all_gather, all_reduce_array, reduce_scatter, split_chunks
from dmhe.transport import Transport

__all__ = [
    "AGGREGATORS",
    "INT64_MODULUS",
    "MODP_2048_G",
    "MODP_2048_P",
    "Aggregator",
    "PairwiseMaskAggregator",
    "PlaintextAggregator",
    "_KeyAgreement",
    "expand_mask",
    "get_aggregator_class",
    "make_aggregator",
    "ring_all_gather",
    "ring_allreduce",
    "ring_reduce_scatter",
    "split_chunks",
]

T = TypeVar("T")


def ring_reduce_scatter(
    transport: Transport,
    chunks: Sequence[T],
    *,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes, int], T],
    combine: Callable[[T, T], T],
) -> tuple[int, T]:
    """:func:`dmhe.collectives.reduce_scatter` on the ring, with the codec as keywords."""
    return reduce_scatter(transport, chunks, Codec(encode, decode, combine))


def ring_all_gather(
    transport: Transport,
    index: int,
    chunk: T,
    *,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes, int], T],
) -> list[T]:
    """:func:`dmhe.collectives.all_gather` on the ring, with the codec as keywords."""
    return all_gather(transport, index, chunk, Codec(encode, decode))


def ring_allreduce(transport: Transport, values: np.ndarray) -> np.ndarray:
    """:func:`dmhe.collectives.all_reduce_array` (1-D int64 or float sum on every peer)."""
    return all_reduce_array(transport, values)
