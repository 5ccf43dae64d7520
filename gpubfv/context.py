"""Context: everything derived from (Parameters, Backend) once — bases, converters, scalers."""

from __future__ import annotations

import math
from functools import cache, cached_property

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.params import Parameters
from gpubfv.ring.basis import RNSBasis
from gpubfv.ring.modmath import generate_ntt_primes
from gpubfv.ring.rns import BaseConverter, HPSScaler, ScaleRoundToT


class Context:
    def __init__(self, params: Parameters, backend: Backend) -> None:
        self.params = params
        self.backend = backend
        self.n = params.n
        self.L = len(params.q)
        self.K = len(params.p)

    @cached_property
    def qp(self) -> RNSBasis:
        """Q primes first, then P primes: rows [:L] of a QP polynomial are its Q part."""
        return RNSBasis(self.params.q + self.params.p, self.n, self.backend)

    @cached_property
    def pb(self) -> RNSBasis:
        return RNSBasis(self.params.p, self.n, self.backend)

    def q_basis(self, level: int | None = None) -> RNSBasis:
        level = self.L if level is None else level
        return self._q_basis(level)

    @cache  # noqa: B019 - one Context per (params, backend), lives forever
    def _q_basis(self, level: int) -> RNSBasis:
        if not 1 <= level <= self.L:
            raise ValueError(f"level {level} outside 1..{self.L}")
        return RNSBasis(self.params.q[:level], self.n, self.backend)

    @cache  # noqa: B019
    def decrypt_scaler(self, level: int) -> ScaleRoundToT:
        return ScaleRoundToT(self.q_basis(level), self.params.t)

    @cache  # noqa: B019
    def plain_scaling(self, level: int) -> tuple[int, int, object]:
        """(t, Q mod t, [t^-1]_{q_i}) for encoding round(Q*m/t) at `level`."""
        t = self.params.t
        big_q = self.params.q_at(level)
        tinv = np.array([pow(t % q, -1, q) for q in self.params.q[:level]], dtype=np.uint32)
        return t, big_q % t, self.backend.xp.asarray(tinv)

    @cache  # noqa: B019
    def drop_constants(self, level: int) -> tuple[object, object]:
        """([q_level]_{q_i}, [q_level^-1]_{q_i}) for i < level: dropping the last prime."""
        ql = self.params.q[level - 1]
        rest = self.params.q[: level - 1]
        xp = self.backend.xp
        mod = np.array([ql % q for q in rest], dtype=np.uint32)
        inv = np.array([pow(ql, -1, q) for q in rest], dtype=np.uint32)
        return xp.asarray(mod), xp.asarray(inv)

    # -- multiplication (HPS) -------------------------------------------------------------
    @cached_property
    def r_basis(self) -> RNSBasis:
        """Auxiliary basis R > 2tNQ: room for the tensor product and its scaling."""
        need = self.params.big_q.bit_length() + self.params.t.bit_length() + self.n.bit_length() + 3
        count = math.ceil(need / 30)
        avoid = set(self.params.q + self.params.p) | {self.params.t}
        primes = generate_ntt_primes([30] * count, self.n, avoid)
        return RNSBasis(primes, self.n, self.backend)

    @cached_property
    def q_to_r(self) -> BaseConverter:
        return BaseConverter(self.q_basis(), self.r_basis)

    @cached_property
    def r_to_q(self) -> BaseConverter:
        return BaseConverter(self.r_basis, self.q_basis())

    @cached_property
    def qr(self) -> RNSBasis:
        return RNSBasis(self.params.q + self.r_basis.moduli, self.n, self.backend)

    @cached_property
    def hps(self) -> HPSScaler:
        return HPSScaler(self.q_basis(), self.r_basis, self.params.t)

    # -- key switching (hybrid, digits = groups of len(P) primes) ---------------------------
    @cached_property
    def digits(self) -> list[tuple[int, ...]]:
        alpha = max(1, self.K)
        return [tuple(range(i, min(i + alpha, self.L))) for i in range(0, self.L, alpha)]

    @cached_property
    def digit_converters(self) -> list[tuple[BaseConverter, np.ndarray]]:
        """For each digit: converter from its primes to the rest of QP, and the row order."""
        out = []
        allq = self.params.q + self.params.p
        for grp in self.digits:
            src = RNSBasis([allq[i] for i in grp], self.n, self.backend)
            rest = [i for i in range(self.L + self.K) if i not in grp]
            dst = RNSBasis([allq[i] for i in rest], self.n, self.backend)
            out.append(
                (BaseConverter(src, dst), self.backend.xp.asarray(np.array(rest, dtype=np.int64)))
            )
        return out

    @cached_property
    def p_to_q(self) -> BaseConverter:
        return BaseConverter(self.pb, self.q_basis())

    @cached_property
    def p_inv_mod_q(self) -> list[int]:
        big_p = self.params.big_p
        return [pow(big_p % q, -1, q) for q in self.params.q]

    @cached_property
    def p_mod_q(self) -> list[int]:
        return [self.params.big_p % q for q in self.params.q]


_CONTEXTS: dict[tuple[int, str], Context] = {}


def get_context(params: Parameters, backend: Backend | None = None) -> Context:
    backend = backend or get_backend("cpu")
    key = (id(params), backend.name)
    ctx = _CONTEXTS.get(key)
    if ctx is None or ctx.params is not params:
        ctx = Context(params, backend)
        _CONTEXTS[key] = ctx
    return ctx
