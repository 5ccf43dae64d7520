"""gpubfv: multiparty BFV homomorphic encryption on CPU (numpy + numba) and GPU (CuPy + CUDA)."""

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
__version__ = "0.1.0"
