"""Plaintexts and ciphertexts. A batch is one array: batch dimensions first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpubfv.params import Parameters


@dataclass(eq=False)
class Plaintext:
    """Plaintext polynomial(s): uint64 coefficients in [0, t), shape (..., N)."""

    params: Parameters
    data: Any

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-1])


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
        return int(self.data.shape[-3])

    @property
    def level(self) -> int:
        return int(self.data.shape[-2])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-3])

    def __len__(self) -> int:
        return int(self.data.shape[0]) if self.data.ndim > 3 else 1

    def __getitem__(self, idx: Any) -> Ciphertext:
        if self.data.ndim <= 3:
            raise IndexError("a single ciphertext has no batch dimension")
        return Ciphertext(self.params, self.data[idx])
