"""Plaintexts and ciphertexts. A batch is one array: batch dimensions first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubfv.params import Parameters


@dataclass(eq=False)
class Plaintext:
    """Plaintext polynomial(s): uint64 coefficients in [0, t), shape (..., N).

    With a wide t = 2^k (`params.t_wide`) each coefficient is W = `params.t_words` 32-bit
    words, little-endian (word 0 least significant): uint32 data of shape (..., W, N); bits at
    and above k are ignored (values are taken mod 2^k).
    """

    params: Parameters
    data: Any

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading (batch) dimensions of `data`."""
        return tuple(self.data.shape[: -2 if self.params.t_wide else -1])


@dataclass(eq=False)
class Ciphertext:
    """BFV ciphertext(s): uint32 residues, coefficient domain, shape (..., size, level, N).

    `seed` is set on fresh secret-key ciphertexts, whose c1 is a public uniform polynomial
    expanded from it: serialization then sends the seed instead of c1. Any operation returns a
    ciphertext without a seed.
    """

    params: Parameters
    data: Any
    seed: bytes | None = None
    seed_domain: str = ""

    @property
    def size(self) -> int:
        """Number of polynomials: 2 fresh, 3 after a tensor product."""
        return int(self.data.shape[-3])

    @property
    def level(self) -> int:
        """Number of ciphertext primes still present (L fresh, fewer after mod switching)."""
        return int(self.data.shape[-2])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The leading (batch) dimensions of `data`."""
        return tuple(self.data.shape[:-3])

    def __len__(self) -> int:
        """Length of the first batch dimension (1 for a single ciphertext)."""
        return int(self.data.shape[0]) if self.data.ndim > 3 else 1

    def __getitem__(self, idx: Any) -> Ciphertext:
        """Index the batch: `cts[i]`, `cts[2:5]` (no seed: c1 is no longer the expanded one)."""
        if self.data.ndim <= 3:
            raise IndexError("a single ciphertext has no batch dimension")
        return Ciphertext(self.params, self.data[idx])


def check_ciphertext(params: Parameters, ct: Ciphertext, size: int | None = None) -> None:
    """Raise unless `ct` is a well-formed ciphertext of `params` (of `size` polynomials if set)."""
    if not isinstance(ct, Ciphertext):
        raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
    if ct.params.fingerprint != params.fingerprint:
        raise ValueError("ciphertext belongs to other parameters")
    if ct.data.dtype != np.uint32 or ct.data.ndim < 3 or ct.data.shape[-1] != params.n:
        raise ValueError("malformed ciphertext data")
    if not 1 <= ct.level <= len(params.q) or ct.size not in (2, 3):
        raise ValueError(f"ciphertext of size {ct.size} at level {ct.level} is not valid here")
    if size is not None and ct.size != size:
        raise ValueError(f"expected a ciphertext of size {size}, got {ct.size}")


def check_plaintext(params: Parameters, pt: Plaintext) -> None:
    """Raise unless `pt` is a well-formed plaintext of `params` (uint64, N coefficients; wide
    t: uint32 words (..., W, N))."""
    if not isinstance(pt, Plaintext):
        raise TypeError(f"expected a Plaintext, got {type(pt).__name__}")
    if pt.params.fingerprint != params.fingerprint:
        raise ValueError("plaintext belongs to other parameters")
    if params.t_wide:
        d = pt.data
        if d.dtype != np.uint32 or d.ndim < 2 or d.shape[-2:] != (params.t_words, params.n):
            raise ValueError(
                f"malformed wide plaintext data: need uint32 (..., {params.t_words}, "
                f"{params.n}) words for t = 2^{params.t_log2}"
            )
        return
    if pt.data.dtype != np.uint64 or pt.data.shape[-1] != params.n:
        raise ValueError("malformed plaintext data")
