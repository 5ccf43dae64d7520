"""Opacus with its Gaussian noise drawn from our ChaCha20 instead of torch's generator.

Opacus 1.6 adds its noise in ``DPOptimizer.add_noise`` through ``torch.normal(generator=...)``;
its ``secure_mode`` swaps in torchcsprng, which is not installed here. :class:`CSPRNGDPOptimizer`
overrides ``add_noise`` (and nothing else: clipping, accumulation, scaling and the accountant's
step hook are Opacus'), and :class:`CSPRNGPrivacyEngine` overrides the one place
``make_private`` builds the optimizer, so that ``make_private(..., noise_bits=RandomBits(...))``
returns it. Only Opacus' flat clipping, non-distributed, ``hooks`` mode is supported (what
:mod:`dmhe.privacy.dpsgd` uses); anything else is refused.

What the noise is, precisely: ``N(0, (noise_multiplier * max_grad_norm)^2)`` per coordinate as a
*float Gaussian from cryptographic uniform bits* -- Box-Muller in float64 on 53-bit uniforms in
``(0, 1]`` from ChaCha20 (:meth:`RandomBits.normal`, one keystream draw per optimizer step for
all parameters), scaled by the std and rounded to the gradient's dtype (float32). It is not an
exact Gaussian: its values lie on a floating-point grid, its tail stops at ~8.57 std, and
floating-point noise can reveal what the ideal mechanism would not (Mironov 2012, for the
Laplace mechanism; the same holds for float Gaussians). The accountant's epsilon is that of the
ideal Gaussian. Poisson sampling of the batches still uses the loader's torch generator.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

from dmhe.privacy.random import RandomBits

__all__ = ["CSPRNGDPOptimizer", "CSPRNGPrivacyEngine"]


class CSPRNGDPOptimizer(DPOptimizer):
    """Opacus' ``DPOptimizer`` whose noise comes from ``noise_bits`` (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, noise_bits: RandomBits, **kw: Any):
        super().__init__(optimizer, **kw)
        self.noise_bits = noise_bits

    def add_noise(self) -> None:
        """``p.grad = p.summed_grad + std * z`` for every parameter, ``z`` from ChaCha20."""
        params = list(self.params)
        for p in params:
            _check_processed_flag(p.summed_grad)
        std = self.noise_multiplier * self.max_grad_norm
        sizes = [p.summed_grad.numel() for p in params]
        z = self.noise_bits.normal(sum(sizes)) if std > 0 else None
        offset = 0
        for p, n in zip(params, sizes):
            g = p.summed_grad
            if z is not None:
                noise = (std * z[offset : offset + n]).to(device=g.device, dtype=g.dtype)
                g = g + noise.view_as(g)
            offset += n
            p.grad = g.view_as(p)
            _mark_as_processed(p.summed_grad)


class CSPRNGPrivacyEngine(PrivacyEngine):
    """A ``PrivacyEngine`` whose ``make_private(..., noise_bits=bits)`` returns a
    :class:`CSPRNGDPOptimizer` drawing its noise from ``bits``."""

    def _prepare_optimizer(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        distributed: bool = False,
        clipping: str = "flat",
        noise_generator: Any = None,
        grad_sample_mode: str = "hooks",
        noise_bits: RandomBits | None = None,
        **kwargs: Any,
    ) -> CSPRNGDPOptimizer:
        if noise_bits is None:
            raise ValueError("CSPRNGPrivacyEngine.make_private needs noise_bits=RandomBits(...)")
        if distributed or clipping != "flat" or grad_sample_mode != "hooks":
            raise ValueError("CSPRNG noise supports flat clipping, one process, 'hooks' only")
        if noise_generator is not None:
            raise ValueError("the noise comes from noise_bits; pass no noise_generator")
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        return CSPRNGDPOptimizer(
            optimizer,
            noise_bits=noise_bits,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction=loss_reduction,
            **kwargs,
        )
