"""Aggregation strategies, one file each: ``plaintext``, ``dp``, ``secagg``, ``encrypted``
(+ ``encrypted_threshold``). The interface and the registry are in ``base``; a strategy's
module is imported only when it is looked up, so the baselines need no crypto library."""

from dmhe.aggregators.base import (
    AGGREGATORS,
    INT64_MODULUS,
    Aggregator,
    AggregatorBase,
    Option,
    get_aggregator_class,
    make_aggregator,
    validate_options,
)

__all__ = [
    "AGGREGATORS",
    "INT64_MODULUS",
    "Aggregator",
    "AggregatorBase",
    "Option",
    "get_aggregator_class",
    "make_aggregator",
    "validate_options",
]
