"""The samplers' device arithmetic (kernels.cuda.prng) at its edges, against Python integers:
the multiply-shift carry chains with all-ones words (every partial sum reaches 2^64 - 1) and
the division by invariants that places a thread's first output. Under numba's CUDA simulator on
CPU-only CI, on the GPU with `--backend cuda` (tests/conftest.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not SIM:  # pragma: no cover - real GPU run (--backend cuda)
    cupy = pytest.importorskip("cupy")

from numba import cuda  # noqa: E402

from kernels.cuda import prng as _P  # noqa: E402


def dev(a: np.ndarray):
    """Host array -> kernel array (numpy in the simulator, CuPy on a GPU)."""
    a = np.ascontiguousarray(a)
    return a.copy() if SIM else cupy.asarray(a)


def host(a) -> np.ndarray:
    """Kernel array -> numpy."""
    return a if isinstance(a, np.ndarray) else cupy.asnumpy(a)


# test kernels around the samplers' device functions (module level: the simulator swaps the
# `cuda` of a kernel's globals, not of a closure)
@cuda.jit
def _mulshift_probe(words, mods, out32, out64):
    i = cuda.grid(1)
    if i < words.shape[0]:
        w0, w1, w2, w3 = words[i, 0], words[i, 1], words[i, 2], words[i, 3]
        out32[i] = _P._mulshift128_32(w0, w1, w2, w3, mods[i, 0])
        out64[i] = _P._mulshift128_64(w0, w1, w2, w3, mods[i, 1], mods[i, 2])


@cuda.jit
def _divmod_probe(xs, ds, ms, out):
    i = cuda.grid(1)
    if i < xs.shape[0]:
        qt, r = _P._divmod32(xs[i], ds[i], ms[i])
        out[i, 0] = qt
        out[i, 1] = r


def test_sampler_device_arithmetic_extremes():
    # the multiply-shift carry chains at their widest (all-ones words: every partial sum reaches
    # 2^64 - 1) and the division by invariants at its edges, against Python integers
    M = 2**32 - 1
    rng = np.random.default_rng(7)
    words = [[M] * 4, [0] * 4, [M, 0, 0, M], [0, 0, 0, M], [M, M, M, 0]]
    words += rng.integers(0, 2**32, (7, 4)).tolist()
    qs = [2, 3, 97, 2**31 + 11, 2**32 - 5, M] * 4
    ms = [1, 3, 2**32 - 1, 2**32 + 1, 2**63 - 1, 12345678901] * 4
    # v just above a multiple of 2^128 / q (or / m): v * q mod 2^128 < q, so the result is
    # right only if every low-order carry reaches the top word (random words almost never
    # need them)
    for i, (q, m) in enumerate(zip(qs[12:18], ms[12:18], strict=True)):
        v = -(-((i + 1) * 2**128) // q) if i % 2 else -(-((i + 1) * 2**128) // m) % 2**128
        words.append([(v >> (32 * k)) & M for k in range(4)])
    n = len(words)
    w = np.array(words, dtype=np.uint32)
    mods = np.array([[qs[i], ms[i] & M, ms[i] >> 32] for i in range(n)], dtype=np.uint32)
    o32, o64 = np.zeros(n, np.uint32), np.zeros(n, np.uint64)
    d32, d64 = dev(o32), dev(o64)
    _mulshift_probe[1, 32](dev(w), dev(mods), d32, d64)
    for i, ws in enumerate(words):
        v = sum(int(x) << (32 * k) for k, x in enumerate(ws))
        assert int(host(d32)[i]) == (v * qs[i]) >> 128, (ws, qs[i])
        assert int(host(d64)[i]) == (v * ms[i]) >> 128, (ws, ms[i])
    xs = [0, 1, 3, 2**31, 2**32 - 2, M, 4 * 1234567, 2**32 - 4]
    ds = [1, 2, 3, 5, 7, 2**16 + 1, 2**31 - 1, 2**31 + 1, M]
    pairs = [(x, d) for x in xs for d in ds]
    out = dev(np.zeros((len(pairs), 2), np.uint32))
    xa = dev(np.array([x for x, _ in pairs], np.uint32))
    da = dev(np.array([d for _, d in pairs], np.uint32))
    _divmod_probe[-(-len(pairs) // 32), 32](
        xa, da, dev(np.array([_P._div_mult(d) for _, d in pairs], np.uint32)), out
    )
    assert host(out).tolist() == [[x // d, x % d] for x, d in pairs]
