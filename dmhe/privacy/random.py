"""Uniform random integers for DP noise, from ChaCha20 keyed by ``os.urandom``.

:class:`RandomBits` is the construction of gpubfv's CSPRNG (``gpubfv.ring.sampling.PRNG``): a
32-byte key from ``os.urandom`` (or an explicit seed, for tests and public randomness) expanded
by the backend's ChaCha20 kernel on the tensor's device, one nonce per draw, so no keystream is
reused. It reaches the kernel through :class:`gpubfv.backend.Backend`, the one gpubfv module
that dmhe outside the encrypted aggregator may import. Every derived sampler is *exact* given
uniform bits: a uniform integer below ``m`` is rejection-sampled from 62-bit words (no modulo
bias), and a Bernoulli of a rational ``num/den`` compares such an integer with ``num``. Nothing
here uses torch's or numpy's non-cryptographic generators. Kernels that expand the keystream
themselves (the exact discrete Gaussian) take a fresh ``(key, nonce)`` from :meth:`stream`.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import numpy as np
import torch

from gpubfv.backend import Backend, get_backend

__all__ = ["RandomBits", "derive_seed"]

_MASK31 = (1 << 31) - 1
_TWO62 = 1 << 62


def derive_seed(*parts: bytes | str | int) -> bytes:
    """A 32-byte seed from labelled parts (SHA-256): reproducible streams for tests and for
    public values such as the round's rotation signs."""
    h = hashlib.sha256(b"dmhe-privacy-seed")
    for p in parts:
        if isinstance(p, int):
            p = p.to_bytes(16, "little", signed=True)
        elif isinstance(p, str):
            p = p.encode()
        h.update(len(p).to_bytes(4, "little") + p)
    return h.digest()


class RandomBits:
    """Uniform integers as int64 torch tensors on ``device`` (see the module docstring).

    ``seed``: 32 bytes for a reproducible stream (tests, public randomness); ``None`` keys it
    from ``os.urandom`` through the CSPRNG (what private noise must use).
    """

    def __init__(self, seed: bytes | None = None, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._backend: Backend = get_backend(Backend.device_kind(self.device))
        key = os.urandom(32) if seed is None else bytes(seed)
        if len(key) != 32:
            raise ValueError("a seed is exactly 32 bytes")
        self._key = np.frombuffer(key, dtype="<u4").astype(np.uint32)
        self._draws = 0

    def stream(self) -> tuple[Backend, np.ndarray, np.ndarray]:
        """``(backend, key, nonce)`` of a fresh keystream (a nonce no draw has used) for a
        kernel that expands ChaCha20 itself, e.g. ``backend.discrete_gaussian``."""
        c = self._draws
        self._draws += 1
        nonce = np.array([c & 0xFFFFFFFF, (c >> 32) & 0xFFFFFFFF, 0x50564944], dtype=np.uint32)
        return self._backend, self._key, nonce

    def as_tensor(self, arr: Any) -> torch.Tensor:
        """A backend array (numpy or CuPy) as a torch tensor on ``device``."""
        out = torch.from_dlpack(arr) if self._backend.is_gpu else torch.from_numpy(arr)
        return out.to(self.device)

    def words(self, count: int) -> torch.Tensor:
        """``count`` uniform 32-bit words as int64 in ``[0, 2^32)``."""
        if count <= 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        backend, key, nonce = self.stream()
        raw = backend.k.chacha20_blocks(key, nonce, 0, (count + 15) // 16)
        return self.as_tensor(raw.reshape(-1)[:count].astype(np.int64))

    def bits62(self, count: int) -> torch.Tensor:
        """``count`` uniform integers in ``[0, 2^62)``."""
        w = self.words(2 * count).view(2, count) if count > 0 else self.words(0).view(2, 0)
        return ((w[0] & _MASK31) << 31) | (w[1] & _MASK31)

    def below(self, m: torch.Tensor | int, count: int | None = None) -> torch.Tensor:
        """Uniform integers in ``[0, m)`` per element (``m`` in ``[1, 2^62]``, a tensor, or an
        int with ``count``), by rejection from 62-bit words: exactly uniform."""
        if not isinstance(m, torch.Tensor):
            if count is None or not 1 <= int(m) <= _TWO62:
                raise ValueError("below(int) needs 1 <= m <= 2^62 and a count")
            m_int = int(m)
            if m_int & (m_int - 1) == 0:  # a power of two: the low bits are uniform
                return self.bits62(count) & (m_int - 1)
            limit_int = (_TWO62 // m_int) * m_int
            out = self.bits62(count)
            pending = torch.nonzero(out >= limit_int).flatten()  # rarely any
            while pending.numel():
                r = self.bits62(pending.numel())
                ok = r < limit_int
                out[pending[ok]] = r[ok]
                pending = pending[~ok]
            return out % m_int
        if m.numel() and (int(m.min()) < 1 or int(m.max()) > _TWO62):
            raise ValueError("below() needs 1 <= m <= 2^62")
        limit = (_TWO62 // m) * m  # largest multiple of m not above 2^62: accept r < limit
        out = torch.empty_like(m)
        pending = torch.arange(m.numel(), device=self.device)
        while pending.numel():
            r = self.bits62(pending.numel())
            ok = r < limit[pending]
            out[pending[ok]] = r[ok] % m[pending[ok]]
            pending = pending[~ok]
        return out

    def bernoulli(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        """Exact Bernoulli(``num/den``) per element (``0 <= num <= den``, ``den <= 2^62``)."""
        return self.below(den) < num

    def uniform01(self, count: int) -> torch.Tensor:
        """Float64 uniforms in ``(0, 1]`` with 53 random bits (for the continuous Gaussian)."""
        return ((self.bits62(count) >> 9) + 1).double() * 2.0**-53

    def normal(self, count: int) -> torch.Tensor:
        """``count`` float64 standard normals: Box-Muller on pairs of :meth:`uniform01` values
        (``r = sqrt(-2 ln u1)``, both ``r cos(2 pi u2)`` and ``r sin(2 pi u2)`` used). A float
        Gaussian from cryptographic bits, not an exact one: its values lie on a float64 grid and
        ``|z| <= sqrt(106 ln 2) ~ 8.57`` (``u1 >= 2^-53``); floating-point noise can leak what
        an ideal Gaussian would not (Mironov 2012). The integer mechanisms here are exact."""
        half = (count + 1) // 2
        u = self.uniform01(2 * half).view(2, half)
        r = torch.sqrt(-2.0 * torch.log(u[0]))
        theta = (2.0 * math.pi) * u[1]
        return torch.cat([r * torch.cos(theta), r * torch.sin(theta)])[:count]
