"""Shared plumbing for the CUDA kernels: simulator detection, array module, device constants,
launch helpers.

Real GPU: data arrays are CuPy arrays (anything with ``__cuda_array_interface__``); kernels are
launched on CuPy's current stream, and the arrays are wrapped without the per-launch stream
synchronisation numba would otherwise do (we launch on the stream that produced them).
Simulator (``NUMBA_ENABLE_CUDASIM=1``): data arrays are numpy arrays, passed straight through.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from numba import config, cuda, float64, int32, int64, uint32, uint64

SIM = bool(config.ENABLE_CUDASIM)

# On-disk kernel cache (numba-cuda's cache=True: cubins per compute capability in __pycache__,
# or ~/.cache/numba when that is read-only), so a process does not JIT every kernel again.
# GPUBFV_KERNEL_CACHE=0 turns it off; the simulator compiles nothing and caches nothing.
CACHE = not SIM and os.environ.get("GPUBFV_KERNEL_CACHE", "1") != "0"

# Alignment of shared tables read as 16-byte vectors (ld.shared.v4): the simulator takes none.
SHARED_ALIGN = None if SIM else 16

# Threads per block of the element-wise kernels (x dimension of a 2-D grid over (rows, N)).
ELEMWISE_THREADS = 32 if SIM else 256
# Rows (y) per launch at most; kernels loop over the remaining rows (grid-stride in y).
MAX_GRID_Y = 65535


def xp() -> Any:
    """The array module of device arrays: numpy under the simulator, CuPy otherwise."""
    if SIM:
        return np
    import cupy

    return cupy


def device_id() -> int:
    if SIM:
        return 0
    import cupy

    return int(cupy.cuda.Device().id)


def is_device_array(a: Any) -> bool:
    if SIM:
        return isinstance(a, np.ndarray)
    return hasattr(a, "__cuda_array_interface__")


def check_data(a: Any, name: str = "array") -> None:
    """Data operands must already live on the device (numpy only under the simulator)."""
    if not is_device_array(a):
        where = "a numpy array (simulator)" if SIM else "a CuPy/CUDA array"
        raise TypeError(f"{name} must be {where}, got {type(a).__name__}")


def asdev(a: Any, dtype: Any = None) -> Any:
    """A small host or device constant -> a contiguous device array (copies only when needed)."""
    mod = xp()
    return mod.ascontiguousarray(mod.asarray(a, dtype=dtype))


def const_dev(a: Any, dtype: Any = None) -> Any:
    """A read-only constant as a kernel-ready device array. Under the simulator this is a
    simulated device array (so launches do not copy it back: the tables are read-only numpy)."""
    if SIM:
        return cuda.to_device(np.ascontiguousarray(np.asarray(a, dtype=dtype)))
    return asdev(a, dtype)


# (id(holder), device) -> (holder, {field: device array}); the holder is kept alive so its id
# cannot be reused while the entry exists (holders are long-lived: tables, converters).
_CONST_CACHE: dict[tuple[int, int], tuple[Any, dict[str, Any]]] = {}


def derived(holder: Any, name: str, make: Any) -> Any:
    """Device copy of `make(holder)` (a host table computed from `holder`'s host fields, such
    as Shoup constants), made once per (holder, device) and memoised beside ``consts``."""
    consts(holder)
    cache = _CONST_CACHE[(id(holder), device_id())][1]
    key = "derived:" + name
    if key not in cache:
        cache[key] = const_dev(make(holder))
    return cache[key]


def consts(holder: Any, *fields: str) -> tuple[Any, ...]:
    """Device copies of `holder`'s array fields, made once per (holder, device) and memoised."""
    key = (id(holder), device_id())
    ent = _CONST_CACHE.get(key)
    if ent is None or ent[0] is not holder:
        ent = (holder, {})
        _CONST_CACHE[key] = ent
    cache = ent[1]
    out = []
    for f in fields:
        arr = cache.get(f)
        if arr is None:
            arr = const_dev(getattr(holder, f))
            cache[f] = arr
        out.append(arr)
    return tuple(out)


_STREAMS: dict[int, Any] = {}


def stream() -> Any:
    """numba stream object for CuPy's current stream (0 = default stream in the simulator)."""
    if SIM:
        return 0
    import cupy

    ptr = int(cupy.cuda.get_current_stream().ptr)
    if ptr == 0:
        return cuda.default_stream()
    s = _STREAMS.get(ptr)
    if s is None:
        s = cuda.external_stream(ptr)
        _STREAMS[ptr] = s
    return s


def arg(a: Any) -> Any:
    """Kernel argument: numpy as is (simulator), CUDA arrays wrapped without a stream sync."""
    if a is None:
        return a
    if SIM:
        # The simulator copies numpy arguments back after a launch: read-only inputs go in as
        # simulated device arrays instead (nothing to copy back).
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            return cuda.to_device(np.ascontiguousarray(a))
        return a
    if isinstance(a, np.ndarray):  # tiny host constants that slipped through
        return cuda.to_device(np.ascontiguousarray(a), stream=stream())
    return cuda.as_cuda_array(a, sync=False)


def grid_rows_cols(rows: int, cols: int, threads: int = 0) -> tuple[tuple[int, int], int]:
    """2-D launch: x covers `cols` with `threads` per block, y covers rows (capped)."""
    threads = threads or ELEMWISE_THREADS
    gx = max(1, (cols + threads - 1) // threads)
    gy = max(1, min(rows, MAX_GRID_Y))
    return (gx, gy), threads


def grid_1d(count: int, threads: int = 0) -> tuple[int, int]:
    threads = threads or ELEMWISE_THREADS
    return max(1, (count + threads - 1) // threads), threads


# Launch signatures seen while RECORDED is a set (tests switch it on to keep the static compile
# table, kernels.cuda._sigs, in step with what the launchers really pass).
RECORDED: set[tuple[str, tuple[str, ...]]] | None = None


def arg_type(x: Any) -> str:
    """The numba type name a kernel argument is compiled for (as in ``kernels.cuda._sigs``)."""
    from numba import types as nbt
    from numba.np.numpy_support import from_dtype

    if isinstance(x, bool | np.bool_):
        return str(nbt.boolean)
    if isinstance(x, int):
        return str(nbt.int64)
    if isinstance(x, np.generic):
        return str(from_dtype(x.dtype))
    if isinstance(x, float):
        return str(nbt.float64)
    flags = getattr(x, "flags", None)
    if flags is not None:
        contig = bool(flags["C_CONTIGUOUS"])
    else:
        contig = bool(x.is_c_contiguous())
    layout = "C" if contig else "A"
    return str(nbt.Array(from_dtype(np.dtype(x.dtype)), int(x.ndim), layout))


def launch(kernel: Any, grid: Any, threads: Any, *args: Any) -> None:
    """Launch `kernel` on CuPy's current stream (recording its argument types when asked)."""
    if RECORDED is not None:
        name = getattr(kernel, "py_func", kernel).__name__
        RECORDED.add((name, tuple(arg_type(a) for a in args)))
    kernel[grid, threads, stream()](*args)


def to_host(a: Any) -> np.ndarray:
    """numpy view/copy of a (small) host or device array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


# Float64 multiply / add that the compiler may not contract into an FMA (NVVM contracts by
# default, even without fastmath): the RNS rounding sums must round exactly like the CPU.
if SIM:

    @cuda.jit(device=True)
    def fmul(a, b):
        return a * b

    @cuda.jit(device=True)
    def fadd(a, b):
        return a + b

    @cuda.jit(device=True)
    def mulhi32(a, b):
        return uint32((uint64(a) * uint64(b)) >> uint64(32))

    @cuda.jit(device=True)
    def mulhi64(a, b):
        return uint64((int(a) * int(b)) >> 64)

    @cuda.jit(device=True)
    def madwide(a, b, c):
        return uint64((int(a) * int(b) + int(c)) & 0xFFFFFFFFFFFFFFFF)

    @cuda.jit(device=True)
    def popc(x):
        return int32(bin(int(x)).count("1"))

else:  # pragma: no cover - needs a GPU
    from numba.cuda import libdevice

    @cuda.jit(device=True, inline=True)
    def fmul(a, b):
        return libdevice.dmul_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def fadd(a, b):
        return libdevice.dadd_rn(a, b)

    # High 32 bits of a 32x32 product as one instruction (written as a 64-bit product and a
    # shift, ptxas keeps a wide multiply and a dead high-word add).
    @cuda.jit(device=True, inline=True)
    def mulhi32(a, b):
        return uint32(libdevice.umulhi(a, b))

    @cuda.jit(device=True, inline=True)
    def mulhi64(a, b):
        return uint64(libdevice.umul64hi(a, b))

    # Set bits of a 32-bit word, one POPC instruction.
    @cuda.jit(device=True, inline=True)
    def popc(x):
        return int32(libdevice.popc(uint32(x)))

    from llvmlite import ir
    from numba import types as _nbt
    from numba.cuda.extending import intrinsic

    @intrinsic
    def madwide(typingctx, a, b, c):
        # a * b + c (uint32 a, b; uint64 c, mod 2^64) as one PTX mad.wide.u32: written in
        # Python as a 64-bit product of zero-extended words, NVVM emits mul.lo.u64 and ptxas
        # keeps a dead high-word add per product (the exact sums of the RNS kernels)
        def codegen(context, builder, sig, args):
            a32 = context.cast(builder, args[0], sig.args[0], _nbt.uint32)
            b32 = context.cast(builder, args[1], sig.args[1], _nbt.uint32)
            c64 = context.cast(builder, args[2], sig.args[2], _nbt.uint64)
            fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(32), ir.IntType(32), ir.IntType(64)])
            asm = ir.InlineAsm(fnty, "mad.wide.u32 $0, $1, $2, $3;", "=l,r,r,l")
            return builder.call(asm, [a32, b32, c64])

        return _nbt.uint64(a, b, c), codegen


# Modular reduction (packed constants of kernels.cpu.arith.barrett_constants: mu = floor(2^(2k)/q)
# with k = bitlen(q) in bits 56..63).

_MU_MASK = np.uint64((1 << 56) - 1)


@cuda.jit(device=True, inline=True)
def barrett(x, q, mu_packed):
    # Barrett for x < 2^(2k), k = bitlen(q) <= 30; mu_packed = floor(2^(2k)/q) | k << 56
    # (kernels.cpu.arith.barrett_constants). Identical to kernels.cpu.arith._barrett.
    k = mu_packed >> uint64(56)
    mu = mu_packed & _MU_MASK
    est = ((x >> (k - uint64(1))) * mu) >> (k + uint64(1))
    r = x - est * q
    if r >= q:
        r = r - q
    if r >= q:
        r = r - q
    return r


@cuda.jit(device=True, inline=True)
def reduce_any(x, q, mu_packed):
    # any x < 2^64 (cross-modulus products): Barrett when x < 2^(2k), division otherwise
    k = mu_packed >> uint64(56)
    if (x >> (k + k)) != uint64(0):
        return x % q
    return barrett(x, q, mu_packed)


@cuda.jit(device=True, inline=True)
def barrett32(x, q, mus, k):
    # The CPU's Barrett estimate on 32-bit words, for x < 2^(2k), k = bitlen(q) <= 30, with
    # (mus, k) = unpack_mu(mu_packed): t = x >> (k-1) < 2^(k+1) <= 2^31, and
    # floor(t*mu / 2^(k+1)) = floor(t * (mu << (31-k)) / 2^32), one high-half multiply
    # (mu << (31-k) < 2^32). The estimate never exceeds x // q and the remainder before
    # correction is < 3q < 2^32, so only its low word is formed. Result: x mod q, as on the CPU.
    t = uint32(x >> (k - uint32(1)))
    est = mulhi32(t, mus)
    r = uint32(x - uint64(est) * uint64(q))
    if r >= q:
        r = uint32(r - q)
    if r >= q:
        r = uint32(r - q)
    return r


@cuda.jit(device=True, inline=True)
def unpack_mu(mu_packed):
    # (mu << (31-k), k) from a packed Barrett constant. mu < 2^(k+1) unless q = 2^(k-1), where
    # mu = 2^(k+1) and the shifted value saturates to 2^32 - 1: the estimate is then at most one
    # below the exact quotient (which floor(x / 2^(k-1)) is), still within two corrections.
    k = uint32(mu_packed >> uint64(56))
    m = (mu_packed & uint64((1 << 56) - 1)) << (uint32(31) - k)
    if m > uint64(0xFFFFFFFF):
        m = uint64(0xFFFFFFFF)
    return uint32(m), k


@cuda.jit(device=True, inline=True)
def red32(u, q, m32):
    # u mod q for any 32-bit u, m32 = (2^32 - 1) // q (a 32-bit division, once per thread):
    # the estimate mulhi(u, m32) is at most 2 below u // q, so two corrections (q < 2^30).
    r = uint32(u - mulhi32(u, m32) * q)
    if r >= q:
        r = uint32(r - q)
    if r >= q:
        r = uint32(r - q)
    return r


@cuda.jit(device=True, inline=True)
def shoup_const(w, q):
    # floor(w * 2^32 / q) for w < q < 2^30 without integer division (once per thread): the
    # float64 quotient is within 2^-19 of the exact one, so one integer correction.
    e = int64(float64(w) * 4294967296.0 / float64(q))
    rem = (int64(w) << int64(32)) - e * int64(q)
    if rem < 0:
        e -= 1
    elif rem >= int64(q):
        e += 1
    return uint32(e)


@cuda.jit(device=True, inline=True)
def shoup_mul(u, w, ws, q):
    # u * w mod q for any 32-bit u and a constant w < q < 2^30 with ws = shoup_const(w, q):
    # the estimate mulhi(u, ws) is at most one below (u * w) // q, so one correction.
    r = uint32(uint64(u) * uint64(w) - uint64(mulhi32(u, ws)) * uint64(q))
    if r >= q:
        r = uint32(r - q)
    return r


@cuda.jit(device=True, inline=True)
def shoup_mul_nq(u, w, ws, nq):
    # shoup_mul with nq = 2^32 - q in place of q: u*w + mulhi(u, ws)*nq is u*w mod q + {0, q}
    # in 32-bit words (two multiply-adds, no negation), corrected by min(r, r - q): r - q wraps
    # above 2^32 - 2^30 > r when r < q (q < 2^30)
    lo = uint32(uint64(u) * uint64(w))
    r = uint32(uint64(lo) + uint64(uint32(uint64(mulhi32(u, ws)) * uint64(nq))))
    return min(r, uint32(uint64(r) + uint64(nq)))


@cuda.jit(device=True, inline=True)
def mod_u64(v, q, qinv1, qinv2):
    # v mod q for any uint64 v, q < 2^30, without integer division: qinv2 = 1/q, qinv1 = qinv2
    # (0 for q = 1, where the first estimate could leave uint64). The float64 estimate of
    # v / q is off by < 2^13 / q + 1, so r1 = v - e*q has |r1| < 2^14 + q (its low word, read
    # signed); the second estimate of r1 / q is off by < 2^-36 < 1/q, so r1 - e2*q is in
    # [0, 2q): one correction. Exact, hence equal to the CPU's remainder.
    e = uint64(float64(v) * qinv1)
    r1 = int32(v - e * uint64(q))  # wraps: the low word is exact
    q32 = int32(q)
    r = int32(r1 - int32(math.floor(float64(r1) * qinv2)) * q32)
    if r >= q32:
        r = int32(r - q32)
    return uint32(r)


@cuda.jit(device=True, inline=True)
def mod_s64(v, q, qinv1, qinv2):
    # floor-mod v % q (in [0, q)) for any int64 v, q < 2^30, as mod_u64: the float64 estimate
    # of v / q is off by at most 2^12 / q + 1, so |v - e*q| < 2^12 + q (its low word, signed)
    e = int64(math.floor(float64(v) * qinv1))
    r1 = int32(v - e * int64(q))  # may wrap in int64 near the extremes: the low word is exact
    q32 = int32(q)
    r = int32(r1 - int32(math.floor(float64(r1) * qinv2)) * q32)
    if r >= q32:
        r = int32(r - q32)
    return uint32(r)


@cuda.jit(device=True, inline=True)
def inv_pair(q):
    # (qinv1, qinv2) of mod_u64 / mod_s64 for modulus q, once per thread
    qinv2 = 1.0 / float64(q)
    return (qinv2 if q > 1 else 0.0), qinv2
