"""The argument types every CUDA kernel is launched with: one table, two users.

``benchmarks/gpu_static.py`` compiles each kernel for exactly these signatures (sm_90, sm_80)
without a GPU; the simulator tests record what the launchers really pass (``_common.RECORDED``)
and fail on a signature missing here, so the statically checked code is the code that runs.
Types are numba type names (``str(numba type)``), parsed by :func:`parse_type`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SIGNATURES", "THREADS", "parse_type"]

# (module in kernels.cuda, kernel name) -> argument types, in launch order.
SIGNATURES: dict[tuple[str, str], tuple[str, ...]] = {
    ("ntt", "_fwd_group"): (
        "array(uint32, 2d, C)",
        "int64",
        "int64",
        "int64",
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(uint32, 2d, C)",
        "int64",
        "int64",
        "int64",
        "bool",
    ),
    ("ntt", "_inv_group"): (
        "array(uint32, 2d, C)",
        "int64",
        "int64",
        "int64",
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(uint32, 2d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "bool",
    ),
    ("arith", "_add"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_automorphism"): (
        "array(uint32, 1d, C)",
        "array(int64, 1d, C)",
        "array(uint8, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_drop_last_limb"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_from_signed"): (
        "array(int64, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_mul"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_mul_add"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_mul_scalar"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_neg"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_sub"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("arith", "_sum_batch"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("rns", "_add_scaled_plain"): (
        "array(uint64, 1d, C)",
        "uint64",
        "uint64",
        "uint64",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("rns", "_base_convert"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(float64, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(uint32, 1d, C)",
        "bool",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("rns", "_hps_scale_to_r"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(float64, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("rns", "_scale_round_to_t"): (
        "array(uint32, 1d, C)",
        "array(uint64, 1d, C)",
        "array(float64, 1d, C)",
        "uint64",
        "array(uint64, 1d, C)",
        "int64",
        "int64",
        "int64",
    ),
    ("widet", "_wide_add_scaled_plain"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "uint32",
        "uint32",
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("widet", "_wide_pack"): (
        "array(int64, 1d, C)",
        "int64",
        "int64",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("widet", "_wide_unpack"): (
        "array(uint32, 1d, C)",
        "int64",
        "array(int64, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("widet", "_wide_scale_round"): (
        "array(uint32, 1d, C)",
        "array(uint32, 2d, C)",
        "array(float64, 1d, C)",
        "uint32",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "int64",
        "int64",
    ),
    ("prng", "_bounded_kernel"): (
        "array(uint32, 1d, C)",
        "uint64",
        "int64",
        "array(int64, 1d, C)",
        "int64",
    ),
    ("prng", "_cbd_kernel"): (
        "array(uint32, 1d, C)",
        "array(int64, 1d, C)",
        "int64",
    ),
    ("prng", "_chacha_kernel"): (
        "array(uint32, 1d, C)",
        "uint64",
        "array(uint32, 2d, C)",
        "int64",
    ),
    ("prng", "_gauss_kernel"): (
        "array(uint32, 1d, C)",
        "float64",
        "array(int64, 1d, C)",
        "int64",
    ),
    ("prng", "_ternary_kernel"): (
        "array(uint32, 1d, C)",
        "array(int64, 1d, C)",
        "int64",
    ),
    ("prng", "_uniform_mod_kernel"): (
        "array(uint32, 1d, C)",
        "array(uint32, 1d, C)",
        "int64",
        "int64",
        "uint32",
        "uint32",
        "array(uint32, 1d, C)",
        "int64",
    ),
    # kernels.cuda.dgauss: exact discrete Gaussian, one thread per lane of the CPU layout
    ("dgauss", "_dgauss_kernel"): (
        "array(uint32, 1d, C)",
        "array(uint64, 2d, C)",
        "array(uint64, 2d, C)",
        "array(uint64, 1d, C)",
        "int64",
        "int64",
        "uint64",
        "uint64",
        "int64",
        "int64",
        "array(int64, 1d, C)",
        "array(int64, 1d, C)",
        "int64",
    ),
}

# Threads per block at launch (the NTT's (M*L, N) launch uses min(512, tile/2)).
THREADS: dict[str, int] = {"_fwd_group": 512, "_inv_group": 512}
DEFAULT_THREADS = 256

_ARRAY = re.compile(r"array\((\w+), (\d)d, ([CA])\)$")


def parse_type(name: str) -> Any:
    """A numba type from its printed name: "array(uint32, 2d, C)", "int64", "bool", ..."""
    from numba import types as nbt

    m = _ARRAY.match(name)
    if m:
        return nbt.Array(getattr(nbt, m.group(1)), int(m.group(2)), m.group(3))
    if name == "bool":
        return nbt.boolean
    t = getattr(nbt, name, None)
    if not isinstance(t, nbt.Type):
        raise ValueError(f"unknown numba type name {name!r}")
    return t
