"""CUDA kernels (numba.cuda), the same names and signatures as ``kernels.cpu``.

On a GPU the data arrays are CuPy arrays (anything with ``__cuda_array_interface__``), launched on
CuPy's current stream; with ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in numba's CUDA
simulator on numpy arrays (how CI checks them against ``kernels.cpu`` bit for bit). Every result
equals the CPU kernel's exactly, except that ``sample_gaussian`` may differ by +-1 on rare
elements on real GPUs (CUDA libm vs glibc log/cos; see ``kernels.cuda.prng``).
"""

from kernels.cuda._common import SIM
from kernels.cuda.arith import (
    add,
    automorphism,
    drop_last_limb,
    from_signed,
    mul,
    mul_add,
    mul_scalar,
    neg,
    sub,
    sum_batch,
)
from kernels.cuda.ntt import ntt_forward, ntt_inverse
from kernels.cuda.prng import (
    chacha20_blocks,
    sample_cbd,
    sample_gaussian,
    sample_ternary,
    sample_uniform_bounded,
    sample_uniform_mod,
)
from kernels.cuda.rns import (
    add_scaled_plain,
    base_convert,
    hps_scale_to_r,
    scale_round_to_t,
)

__all__ = [
    "ntt_forward",
    "ntt_inverse",
    "chacha20_blocks",
    "sample_uniform_mod",
    "sample_cbd",
    "sample_ternary",
    "sample_gaussian",
    "sample_uniform_bounded",
    "add",
    "sub",
    "neg",
    "mul",
    "mul_add",
    "mul_scalar",
    "sum_batch",
    "from_signed",
    "automorphism",
    "drop_last_limb",
    "base_convert",
    "scale_round_to_t",
    "hps_scale_to_r",
    "add_scaled_plain",
]

IS_SIMULATOR = SIM
