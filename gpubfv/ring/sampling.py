"""Randomness: a ChaCha20 CSPRNG for secrets and noise, and XOF expansion of public seeds.

`PRNG(seed=None)` draws its 32-byte key from `os.urandom`; an explicit seed gives reproducible
streams for tests. Every draw uses a fresh 96-bit nonce (a counter), so no keystream is reused.
`expand_uniform(seed, domain, ...)` derives public uniform polynomials (CRS, the `a` of
secret-key ciphertexts and keys) from a public seed and a domain label: every peer, on CPU or
GPU, derives the same polynomial, and only the 32-byte seed travels. numpy's default generator
is never used for anything secret.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.ring.basis import RNSBasis

SEED_BYTES = 32


def _key_words(seed: bytes) -> np.ndarray:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is exactly {SEED_BYTES} bytes")
    return np.frombuffer(bytes(seed), dtype="<u4").astype(np.uint32)


def domain_nonce(domain: bytes | str) -> np.ndarray:
    """The 96-bit ChaCha20 nonce of a domain label (SHA-256, domain-separated)."""
    if isinstance(domain, str):
        domain = domain.encode()
    digest = hashlib.sha256(b"gpubfv-xof-domain" + domain).digest()[:12]
    return np.frombuffer(digest, dtype="<u4").astype(np.uint32)


class PRNG:
    """ChaCha20 keystream generator; one nonce per draw."""

    def __init__(self, seed: bytes | None = None, backend: Backend | None = None) -> None:
        self._key = _key_words(os.urandom(SEED_BYTES) if seed is None else seed)
        self._counter = 0
        self.backend = backend or get_backend("cpu")

    def _nonce(self) -> np.ndarray:
        c = self._counter
        self._counter += 1
        return np.array([c & 0xFFFFFFFF, (c >> 32) & 0xFFFFFFFF, 0x474E5250], dtype=np.uint32)

    def seed(self) -> bytes:
        """A fresh 32-byte seed (e.g. for a public uniform polynomial)."""
        words = self.backend.k.chacha20_blocks(self._key, self._nonce(), 0, 1)
        return self.backend.to_numpy(words).astype("<u4").tobytes()[:SEED_BYTES]

    def ternary(self, shape: tuple[int, ...]) -> Any:
        """Uniform ternary int64 values in {-1, 0, 1} (secrets)."""
        count = int(np.prod(shape))
        return self.backend.k.sample_ternary(self._key, self._nonce(), count).reshape(shape)

    def cbd(self, shape: tuple[int, ...]) -> Any:
        """Centered binomial int64 values, eta = ERROR_CBD_ETA (encryption noise)."""
        count = int(np.prod(shape))
        return self.backend.k.sample_cbd(self._key, self._nonce(), count).reshape(shape)

    def gaussian(self, shape: tuple[int, ...], sigma: float) -> Any:
        """Rounded Gaussian int64 values of deviation `sigma` (smudging noise)."""
        count = int(np.prod(shape))
        return self.backend.k.sample_gaussian(
            self._key, self._nonce(), count, float(sigma)
        ).reshape(shape)

    def uniform_bounded(self, shape: tuple[int, ...], bound: int) -> Any:
        """Uniform int64 values in [-bound, bound]."""
        count = int(np.prod(shape))
        return self.backend.k.sample_uniform_bounded(
            self._key, self._nonce(), int(bound), count
        ).reshape(shape)

    def uniform(self, basis: RNSBasis, batch: tuple[int, ...] = ()) -> Any:
        """Uniform residues over `basis`, shape batch + (L, N)."""
        shape = batch + (len(basis), basis.n)
        return self.backend.k.sample_uniform_mod(self._key, self._nonce(), basis.q_host, shape)


def expand_uniform(
    seed: bytes, domain: bytes | str, basis: RNSBasis, batch: tuple[int, ...] = ()
) -> Any:
    """Public uniform polynomial(s) over `basis` from a public seed and a domain label."""
    shape = batch + (len(basis), basis.n)
    return basis.backend.k.sample_uniform_mod(
        _key_words(seed), domain_nonce(domain), basis.q_host, shape
    )
