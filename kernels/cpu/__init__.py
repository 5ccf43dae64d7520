"""CPU kernels (numba)."""

from kernels.cpu.ntt import ntt_forward, ntt_inverse
from kernels.cpu.prng import (
    chacha20_blocks,
    sample_cbd,
    sample_gaussian,
    sample_ternary,
    sample_uniform_bounded,
    sample_uniform_mod,
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
]

# element-wise arithmetic and RNS conversions (scheme-facing kernel set)
from kernels.cpu.arith import (  # noqa: E402
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
from kernels.cpu.rns import (  # noqa: E402
    add_scaled_plain,
    base_convert,
    hps_scale_to_r,
    scale_round_to_t,
)

__all__ += [
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
