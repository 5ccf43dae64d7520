"""The one exception of the wire layer."""

from __future__ import annotations


class SerializationError(ValueError):
    """Bytes that are not a valid encoding, or an object that cannot be encoded."""
