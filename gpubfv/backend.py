"""The one place that decides numpy vs CuPy and CPU vs CUDA kernels.

Everything above calls `backend.xp` (the array module) and `backend.k` (the kernel set, the same
function names in `kernels.cpu` and `kernels.cuda`). Nothing else imports cupy or branches on
the device.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (no CuPy, no CUDA device)."""


def _cuda_available() -> tuple[bool, str]:
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        return False, (
            f"CuPy is not importable ({exc.__class__.__name__}: {exc}); install the GPU extra: "
            "pip install 'gpubfv[gpu]' (numba-cuda[cu13] + cupy-cuda13x, CUDA 13 like torch 2.14.1)"
        )
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover
        return False, f"CUDA runtime error: {exc}"
    if n < 1:  # pragma: no cover
        return False, "no CUDA device is visible"
    return True, ""


def _cuda_sim_available() -> tuple[bool, str]:
    """The simulator mode needs NUMBA_ENABLE_CUDASIM=1 set before numba.cuda is imported."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        return False, (
            "NUMBA_ENABLE_CUDASIM=1 is not set; set it in the environment before anything "
            "imports numba.cuda (it is read once, at import)"
        )
    from numba import config

    # numba.config sets its options as module attributes at import: invisible to a type checker
    if not getattr(config, "ENABLE_CUDASIM", 0):
        return False, (
            "NUMBA_ENABLE_CUDASIM=1 was set after numba was imported; set it before starting "
            "Python (or before the first numba import)"
        )
    return True, ""


class Backend:
    """`Backend("cpu")`, `Backend("cuda")` or `Backend("auto")` (CUDA when a device is seen).

    `Backend("cuda-sim")`: numpy arrays with the `kernels.cuda` kernels run by numba's CUDA
    simulator, for CI without a GPU; only when NUMBA_ENABLE_CUDASIM=1 (slow, tests only).
    """

    # numpy or cupy: the array API both share has no single static type
    xp: Any
    k: ModuleType
    widet: ModuleType  # kernels of a wide plaintext modulus t = 2^k (k > 61)
    name: str

    def __init__(self, name: str = "cpu") -> None:
        if name not in ("cpu", "cuda", "auto", "cuda-sim"):
            raise ValueError(f"backend must be 'cpu', 'cuda', 'auto' or 'cuda-sim', not {name!r}")
        if name == "cuda-sim":
            # numpy arrays + the kernels.cuda kernels run by numba's CUDA simulator (testing).
            ok, why = _cuda_sim_available()
            if not ok:
                raise BackendUnavailable(f"backend 'cuda-sim' requested but unavailable: {why}")
            self.xp = np
            self.k = importlib.import_module("kernels.cuda")
            self.widet = importlib.import_module("kernels.cuda.widet")
            self.name = name
            return
        if name == "auto":
            name = "cuda" if _cuda_available()[0] else "cpu"
        if name == "cuda":
            ok, why = _cuda_available()
            if not ok:
                raise BackendUnavailable(
                    f"backend 'cuda' requested but unavailable: {why}. "
                    "Install the GPU extra (pip install 'gpubfv[gpu]') on a machine with an "
                    "NVIDIA GPU, or use Backend('cpu')."
                )
            import cupy

            self.xp = cupy
            self.k = importlib.import_module("kernels.cuda")
            self.widet = importlib.import_module("kernels.cuda.widet")
        else:
            self.xp = np
            self.k = importlib.import_module("kernels.cpu")
            self.widet = importlib.import_module("kernels.cpu.widet")
        self.name = name

    @property
    def is_gpu(self) -> bool:
        """Whether arrays live on a CUDA device (CuPy); False for cpu and cuda-sim."""
        return self.name == "cuda"

    @staticmethod
    def device_kind(obj: Any) -> str:
        """Return "cuda" if `obj` (a CuPy array, a torch tensor, a torch device or a device
        string such as "cuda:1") lives on a CUDA device, else "cpu". The one place that asks."""
        if isinstance(obj, str):
            return "cuda" if obj.split(":", 1)[0] == "cuda" else "cpu"
        if hasattr(obj, "__cuda_array_interface__") or getattr(obj, "is_cuda", False):
            return "cuda"
        kind = getattr(obj, "type", None)  # torch.device
        return "cuda" if kind == "cuda" else "cpu"

    @classmethod
    def for_array(cls, obj: Any) -> Backend:
        """The backend whose arrays `obj` can be used with without a copy (see `device_kind`)."""
        return get_backend(cls.device_kind(obj))

    def holds(self, obj: Any) -> bool:
        """Whether `obj` lives on this backend's device (so `from_dlpack` needs no copy)."""
        mine = "cuda" if self.name in ("cuda",) else "cpu"
        return self.device_kind(obj) == mine

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """`a` as a C-contiguous array of this backend (a copy only when needed)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        """A host copy of `a` (a no-op for numpy arrays), whichever device `a` lives on."""
        if isinstance(a, np.ndarray):
            return a
        if self.device_kind(a) == "cuda":
            import cupy

            return cupy.asnumpy(a)
        return np.asarray(a)

    def from_dlpack(self, tensor: Any) -> Any:
        """Zero-copy view of a DLPack-capable tensor (e.g. a torch tensor) on this backend."""
        return self.xp.from_dlpack(tensor)

    def discrete_gaussian(
        self, key: np.ndarray, nonce: np.ndarray, variance: int, count: int
    ) -> Any:
        """``count`` exact samples of the discrete Gaussian N_Z(0, variance) (int64, an array of
        this backend) from the ChaCha20 keystream of (key: 8 uint32 words, nonce: 3): the same
        bits on every device and machine (``kernels.cpu.dgauss``, ``kernels.cuda.dgauss``)."""
        kernel = importlib.import_module(self.k.__name__ + ".dgauss")
        return kernel.sample_discrete_gaussian(key, nonce, variance, count)

    @staticmethod
    def discrete_gaussian_max_variance() -> int:
        """The largest variance :meth:`discrete_gaussian` accepts (the kernels' exact integer
        range, the same on every device)."""
        return int(importlib.import_module("kernels.cpu.dgauss").MAX_VARIANCE)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op off the GPU); for timing."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


@cache
def get_backend(name: str = "cpu") -> Backend:
    """The shared `Backend` of that name (one instance per name and process)."""
    return Backend(name)
