"""Byte encodings of every wire type; the format itself is specified in `format`'s docstring.

Rooms: `bitpack` (residue arrays at their bit width, numba), `fields` (bounds-checked reader
and field writers), `format` (header, checksum, type registry, to_bytes/from_bytes/nbytes),
`codec_params`, `codecs_keys`, `codecs_data` (one codec per wire type, and the headerless
ciphertext chunk). Importing this package registers every core codec.
"""

from __future__ import annotations

from gpubfv.serialization import codec_params, codecs_keys  # noqa: F401  (register codecs)
from gpubfv.serialization.bitpack import (
    bits_size,
    pack_bits,
    pack_residues,
    packed_size,
    unpack_bits,
    unpack_residues,
)
from gpubfv.serialization.codec_params import MAX_MODULI, MAX_PARAMS_BODY
from gpubfv.serialization.codecs_data import (
    ciphertext_body,
    ciphertext_body_size,
    ciphertext_from_body,
)
from gpubfv.serialization.errors import SerializationError
from gpubfv.serialization.fields import (
    MAX_BATCH_DIMS,
    MAX_BATCH_ELEMENTS,
    Reader,
    any_host,
    batch_field,
    check_array,
    seed_field,
    text_field,
)
from gpubfv.serialization.format import (
    CHECKSUM_BYTES,
    FINGERPRINT_OFFSET,
    FIRST_EXTENSION_TYPE,
    FLAG_SEEDED,
    FORMAT_VERSION,
    FRAME_OVERHEAD,
    HEADER,
    HEADER_BYTES,
    LENGTH_OFFSET,
    MAGIC,
    TYPE_CIPHERTEXT,
    TYPE_GALOIS_KEYS,
    TYPE_PARAMETERS,
    TYPE_PLAINTEXT,
    TYPE_PUBLIC_KEY,
    TYPE_SECRET_KEY,
    TYPE_SWITCHING_KEY,
    checksum,
    from_bytes,
    nbytes,
    register,
    registered_types,
    reseal,
    to_bytes,
)

__all__ = [
    "CHECKSUM_BYTES",
    "FINGERPRINT_OFFSET",
    "FIRST_EXTENSION_TYPE",
    "FLAG_SEEDED",
    "FORMAT_VERSION",
    "FRAME_OVERHEAD",
    "HEADER",
    "HEADER_BYTES",
    "LENGTH_OFFSET",
    "MAGIC",
    "MAX_BATCH_DIMS",
    "MAX_BATCH_ELEMENTS",
    "MAX_MODULI",
    "MAX_PARAMS_BODY",
    "Reader",
    "SerializationError",
    "TYPE_CIPHERTEXT",
    "TYPE_GALOIS_KEYS",
    "TYPE_PARAMETERS",
    "TYPE_PLAINTEXT",
    "TYPE_PUBLIC_KEY",
    "TYPE_SECRET_KEY",
    "TYPE_SWITCHING_KEY",
    "any_host",
    "batch_field",
    "bits_size",
    "check_array",
    "checksum",
    "ciphertext_body",
    "ciphertext_body_size",
    "ciphertext_from_body",
    "from_bytes",
    "nbytes",
    "pack_bits",
    "pack_residues",
    "packed_size",
    "register",
    "registered_types",
    "reseal",
    "seed_field",
    "text_field",
    "to_bytes",
    "unpack_bits",
    "unpack_residues",
]
