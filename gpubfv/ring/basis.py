"""RNS basis: a tuple of NTT-friendly primes with every table the kernels need.

A polynomial is an array of shape (..., L, N), uint32 residues, batch dimensions first. All
operations reshape to (M, L, N) and call one kernel on the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from kernels.tables import barrett_constants, make_ntt_tables


class RNSBasis:
    """Moduli q_0..q_{L-1} for degree N with their Barrett and NTT tables on one backend.

    Every operation takes and returns arrays (..., L, N) of uint32 residues and runs one kernel
    over the flattened batch; `out=` writes into a preallocated array.
    """

    def __init__(self, moduli: Sequence[int], n: int, backend: Backend | None = None) -> None:
        self.moduli = tuple(int(q) for q in moduli)
        self.n = n
        self.backend = backend or get_backend("cpu")
        xp = self.backend.xp
        self.q_host = np.array(self.moduli, dtype=np.uint32)
        self.mu_host = barrett_constants(self.q_host)
        self.q = xp.asarray(self.q_host)
        self.mu = xp.asarray(self.mu_host)

    def __len__(self) -> int:
        return len(self.moduli)

    @cached_property
    def ntt_tables(self) -> Any:
        """Twiddle tables of the negacyclic NTT, built on first use."""
        return make_ntt_tables(self.moduli, self.n)

    @cached_property
    def product(self) -> int:
        """The product of the moduli, as a Python int."""
        out = 1
        for q in self.moduli:
            out *= q
        return out

    # -- shape helpers --------------------------------------------------------------------
    def _flat(self, a: Any) -> Any:
        L, N = a.shape[-2:]
        if L != len(self.moduli) or N != self.n:
            raise ValueError(
                f"polynomial shape {a.shape} does not match basis (L={len(self)}, N={self.n})"
            )
        return a.reshape(-1, L, N)

    def empty(self, batch: tuple[int, ...] = ()) -> Any:
        """Uninitialised polynomial(s) of shape batch + (L, N)."""
        return self.backend.xp.empty(batch + (len(self), self.n), dtype=np.uint32)

    def zeros(self, batch: tuple[int, ...] = ()) -> Any:
        """Zero polynomial(s) of shape batch + (L, N)."""
        return self.backend.xp.zeros(batch + (len(self), self.n), dtype=np.uint32)

    def _out(self, a: Any, out: Any) -> Any:
        return self.backend.xp.empty_like(a) if out is None else out

    @staticmethod
    def _c(a: Any) -> Any:
        return a if a.flags.c_contiguous else a.copy()

    # -- arithmetic -------------------------------------------------------------------------
    def ntt(self, a: Any, inplace: bool = False) -> Any:
        """Forward negacyclic NTT (a copy unless `inplace`)."""
        out = a if inplace else a.copy()
        self.backend.k.ntt_forward(self._flat(out), self.ntt_tables)
        return out

    def intt(self, a: Any, inplace: bool = False) -> Any:
        """Inverse negacyclic NTT (a copy unless `inplace`)."""
        out = a if inplace else a.copy()
        self.backend.k.ntt_inverse(self._flat(out), self.ntt_tables)
        return out

    def add(self, a: Any, b: Any, out: Any = None) -> Any:
        """a + b mod q per limb."""
        a, b = self._broadcast(a, b)
        out = self._out(a, out)
        self.backend.k.add(self._flat(a), self._flat(b), self.q, self._flat(out))
        return out

    def sub(self, a: Any, b: Any, out: Any = None) -> Any:
        """a - b mod q per limb."""
        a, b = self._broadcast(a, b)
        out = self._out(a, out)
        self.backend.k.sub(self._flat(a), self._flat(b), self.q, self._flat(out))
        return out

    def neg(self, a: Any, out: Any = None) -> Any:
        """-a mod q per limb."""
        a = self._c(a)
        out = self._out(a, out)
        self.backend.k.neg(self._flat(a), self.q, self._flat(out))
        return out

    def mul(self, a: Any, b: Any, out: Any = None) -> Any:
        """a * b mod q per limb (coefficient-wise: NTT-domain polynomial product)."""
        a, b = self._broadcast(a, b)
        out = self._out(a, out)
        self.backend.k.mul(self._flat(a), self._flat(b), self.q, self.mu, self._flat(out))
        return out

    def mul_add(self, a: Any, b: Any, acc: Any) -> Any:
        """acc += a * b (in place)."""
        a, b = self._broadcast(a, b)
        self.backend.k.mul_add(self._flat(a), self._flat(b), self.q, self.mu, self._flat(acc))
        return acc

    def mul_scalar(self, a: Any, scalars: Sequence[int], out: Any = None) -> Any:
        """Multiply limb l by scalars[l] (one integer per modulus, reduced here)."""
        a = self._c(a)
        s = self.backend.xp.asarray(
            np.array([int(v) % q for v, q in zip(scalars, self.moduli)], dtype=np.uint32)
        )
        out = self._out(a, out)
        self.backend.k.mul_scalar(self._flat(a), s, self.q, self.mu, self._flat(out))
        return out

    def sum(self, a: Any) -> Any:
        """Sum over the leading axis in one pass: (K, ..., L, N) -> (..., L, N)."""
        a = self._c(a)
        K = a.shape[0]
        rest = a.shape[1:]
        flat = a.reshape(K, -1, len(self), self.n)
        out = self.backend.xp.empty(flat.shape[1:], dtype=np.uint32)
        self.backend.k.sum_batch(flat, self.q, out)
        return out.reshape(rest)

    def from_signed(self, x: Any) -> Any:
        """int64 (..., N) -> residues (..., L, N)."""
        xp = self.backend.xp
        x = xp.ascontiguousarray(xp.asarray(x, dtype=np.int64))
        batch = x.shape[:-1]
        out = xp.empty(batch + (len(self), self.n), dtype=np.uint32)
        self.backend.k.from_signed(x.reshape(-1, self.n), self.q, self._flat(out))
        return out

    def automorphism(self, a: Any, galois: int, out: Any = None) -> Any:
        """X -> X^galois on coefficient-domain polynomials."""
        idx, negm = self._galois_tables(galois)
        a = self._c(a)
        out = self._out(a, out)
        self.backend.k.automorphism(self._flat(a), idx, negm, self.q, self._flat(out))
        return out

    def _galois_tables(self, g: int) -> tuple[Any, Any]:
        cache = self.__dict__.setdefault("_galois_cache", {})
        if g not in cache:
            n = self.n
            if g % 2 == 0 or not (0 < g < 2 * n):
                raise ValueError(f"Galois element {g} must be odd in (0, 2N)")
            j = (np.arange(n, dtype=np.int64) * g) % (2 * n)
            idx = (j % n).astype(np.int64)
            negm = (j >= n).astype(np.uint8)
            xp = self.backend.xp
            cache[g] = (xp.asarray(idx), xp.asarray(negm))
        return cache[g]

    def _broadcast(self, a: Any, b: Any) -> tuple[Any, Any]:
        """Second operand: same shape, a single polynomial (kernel broadcast), or expanded."""
        a = self._c(a)
        b = self._c(b)
        if a.shape == b.shape or (b.shape[-2:] == a.shape[-2:] and b.size == len(self) * self.n):
            return a, b
        if np.broadcast_shapes(a.shape, b.shape) != a.shape:
            raise ValueError(f"cannot broadcast {b.shape} into {a.shape}")
        xp = self.backend.xp
        return a, xp.ascontiguousarray(xp.broadcast_to(b, a.shape))
