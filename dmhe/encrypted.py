"""Compatibility name: the encrypted strategy lives in :mod:`dmhe.aggregators.encrypted`."""

from dmhe.aggregators.encrypted import EncryptedAggregator

__all__ = ["EncryptedAggregator"]
