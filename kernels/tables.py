"""Host-side constant tables for the kernels: pure numpy / Python ints, no numba, no device.

The scheme layers (gpubfv.ring) build their per-modulus constants here, so that only
gpubfv/backend.py imports a kernel set (`kernels.cpu` or `kernels.cuda`). Both kernel sets read
the Barrett word laid out by `barrett_constants`.
"""

from __future__ import annotations

import numpy as np

from kernels.ntt_tables import (
    NTTTables,
    bit_reverse,
    find_primitive_2n_root,
    generate_ntt_primes,
    is_prime,
    make_ntt_tables,
)

__all__ = [
    "NTTTables",
    "barrett_constants",
    "bit_reverse",
    "find_primitive_2n_root",
    "generate_ntt_primes",
    "is_prime",
    "make_ntt_tables",
]


def barrett_constants(q: np.ndarray) -> np.ndarray:
    """Per modulus: mu = floor(2^(2k)/q) with k = bitlen(q), and k itself in bits 56..63.

    The kernels unpack the word as `k = w >> 56`, `mu = w & (2^56 - 1)`; for q < 2^30, mu has at
    most 31 bits, so the two fields never overlap.
    """
    out = []
    for v in np.asarray(q).tolist():
        v = int(v)
        if v < 2:
            raise ValueError(f"modulus {v} must be at least 2")
        k = v.bit_length()
        out.append(((1 << (2 * k)) // v) | (k << 56))
    return np.array(out, dtype=np.uint64)
