"""gpubfv: multiparty BFV homomorphic encryption on CPU (numpy + numba) and GPU (CuPy + CUDA)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version

from gpubfv.backend import Backend, BackendUnavailable, get_backend
from gpubfv.ciphertext import Ciphertext, Plaintext
from gpubfv.context import Context
from gpubfv.encoder import (
    BatchEncoder,
    CoefficientEncoder,
    EncodingError,
    FixedPointEncoder,
)
from gpubfv.encryptor import Decryptor, Encryptor
from gpubfv.evaluator import Evaluator
from gpubfv.keys import GaloisKeys, KeyGenerator, PublicKey, SecretKey, SwitchingKey
from gpubfv.params import PRESETS, ParameterError, Parameters, ParametersLiteral, preset
from gpubfv.ring.sampling import PRNG

__all__ = [
    "Backend",
    "BackendUnavailable",
    "BatchEncoder",
    "Ciphertext",
    "CoefficientEncoder",
    "Context",
    "Decryptor",
    "EncodingError",
    "Encryptor",
    "Evaluator",
    "FixedPointEncoder",
    "GaloisKeys",
    "KeyGenerator",
    "PRESETS",
    "PRNG",
    "ParameterError",
    "Parameters",
    "ParametersLiteral",
    "Plaintext",
    "PublicKey",
    "SecretKey",
    "SwitchingKey",
    "get_backend",
    "preset",
]


def _version(dist: str) -> str:
    try:
        return _pkg_version(dist)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version("gpubfv")  # the one place: pyproject.toml
