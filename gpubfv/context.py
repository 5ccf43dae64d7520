"""Context: the one handle every scheme object takes (as SEAL's SEALContext).

A `Context` is a `Parameters` set bound to a `Backend`, and owns every table derived from the
two: RNS bases, base converters, scalers, key-switching digits. They are built on first use and
kept for the life of the Context, so build one per (parameters, backend) and pass it around:

    ctx = Context(preset("PN13"), "cpu")
    kg = KeyGenerator(ctx); sk = kg.gen_secret_key()
    enc, dec = Encryptor(ctx, kg.gen_public_key(sk)), Decryptor(ctx, sk)

Data objects (Ciphertext, Plaintext, keys) carry only their `params`, like SEAL's parms_id.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from gpubfv.backend import Backend, get_backend
from gpubfv.params import Parameters
from gpubfv.ring.basis import RNSBasis
from gpubfv.ring.modmath import generate_ntt_primes
from gpubfv.ring.rns import BaseConverter, HPSScaler, ScaleRoundToT


class Context:
    """Parameters + backend + every precomputed table: `Context(params, backend="cpu")`.

    `backend` is a `Backend` or its name ("cpu", "cuda", "auto", "cuda-sim"). Tables are built
    lazily and cached on the instance.
    """

    def __init__(self, params: Parameters, backend: Backend | str = "cpu") -> None:
        if not isinstance(params, Parameters):
            raise TypeError(f"Context takes Parameters, got {type(params).__name__}")
        if isinstance(backend, str):
            backend = get_backend(backend)
        elif not isinstance(backend, Backend):
            raise TypeError(f"backend must be a Backend or its name, got {type(backend).__name__}")
        self.params = params
        self.backend = backend
        self.n = params.n
        self.L = len(params.q)
        self.K = len(params.p)
        self._tables: dict[tuple, Any] = {}

    def __repr__(self) -> str:
        return f"Context({self.params.describe()}, {self.backend!r})"

    def check(self, obj: Any, what: str = "object") -> None:
        """Raise ValueError unless `obj.params` is this context's parameter set."""
        params = getattr(obj, "params", None)
        if not isinstance(params, Parameters) or params.fingerprint != self.params.fingerprint:
            raise ValueError(f"{what} belongs to other parameters than this Context")

    def _memo(self, key: tuple, build: Any) -> Any:
        # per-instance memo for the per-level tables (functools.cache on a method would keep
        # every Context alive in a module-level cache)
        hit = self._tables.get(key)
        if hit is None:
            hit = self._tables[key] = build()
        return hit

    @cached_property
    def qp(self) -> RNSBasis:
        """Q primes first, then P primes: rows [:L] of a QP polynomial are its Q part."""
        return RNSBasis(self.params.q + self.params.p, self.n, self.backend)

    @cached_property
    def pb(self) -> RNSBasis:
        """The special primes P of hybrid key switching."""
        return RNSBasis(self.params.p, self.n, self.backend)

    def q_basis(self, level: int | None = None) -> RNSBasis:
        """The first `level` ciphertext primes (all L by default)."""
        level = self.L if level is None else level
        if not 1 <= level <= self.L:
            raise ValueError(f"level {level} outside 1..{self.L}")
        return self._memo(
            ("q", level), lambda: RNSBasis(self.params.q[:level], self.n, self.backend)
        )

    def decrypt_scaler(self, level: int) -> ScaleRoundToT:
        """round(t * x / Q_level) mod t, the last step of decryption at `level`."""
        return self._memo(("dec", level), lambda: ScaleRoundToT(self.q_basis(level), self.params.t))

    def plain_scaling(self, level: int) -> tuple[int, int, Any]:
        """(t, Q mod t, [t^-1]_{q_i}) for encoding round(Q*m/t) at `level`."""

        def build() -> tuple[int, int, Any]:
            t = self.params.t
            big_q = self.params.q_at(level)
            tinv = np.array([pow(t % q, -1, q) for q in self.params.q[:level]], dtype=np.uint32)
            return t, big_q % t, self.backend.xp.asarray(tinv)

        return self._memo(("plain", level), build)

    def drop_constants(self, level: int) -> tuple[Any, Any]:
        """([q_level]_{q_i}, [q_level^-1]_{q_i}) for i < level: dropping the last prime."""

        def build() -> tuple[Any, Any]:
            ql = self.params.q[level - 1]
            rest = self.params.q[: level - 1]
            xp = self.backend.xp
            mod = np.array([ql % q for q in rest], dtype=np.uint32)
            inv = np.array([pow(ql, -1, q) for q in rest], dtype=np.uint32)
            return xp.asarray(mod), xp.asarray(inv)

        return self._memo(("drop", level), build)

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
        """Exact Q -> R base extension (lifting a ciphertext before the tensor product)."""
        return BaseConverter(self.q_basis(), self.r_basis)

    @cached_property
    def r_to_q(self) -> BaseConverter:
        """Exact R -> Q base extension (bringing the scaled product back)."""
        return BaseConverter(self.r_basis, self.q_basis())

    @cached_property
    def qr(self) -> RNSBasis:
        """Q primes then R primes: the basis of the tensor product."""
        return RNSBasis(self.params.q + self.r_basis.moduli, self.n, self.backend)

    @cached_property
    def hps(self) -> HPSScaler:
        """HPS scale-by-t/Q of a QR polynomial into R."""
        return HPSScaler(self.q_basis(), self.r_basis, self.params.t)

    # -- key switching (hybrid, digits = groups of len(P) primes) ---------------------------
    @cached_property
    def digits(self) -> list[tuple[int, ...]]:
        """Gadget digits of key switching: groups of len(P) consecutive Q primes (indices)."""
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
        """Approximate P -> Q conversion of mod-down."""
        return BaseConverter(self.pb, self.q_basis())

    @cached_property
    def p_inv_mod_q(self) -> list[int]:
        """[P^-1]_{q_i} for every ciphertext prime."""
        big_p = self.params.big_p
        return [pow(big_p % q, -1, q) for q in self.params.q]

    @cached_property
    def p_mod_q(self) -> list[int]:
        """[P]_{q_i} for every ciphertext prime."""
        return [self.params.big_p % q for q in self.params.q]


def require_context(ctx: object, who: str) -> Context:
    """`ctx` itself when it is a `Context`; a TypeError naming the fix otherwise.

    Every scheme and protocol constructor takes a Context only: a bare `Parameters` (the
    pre-Context form) would silently build its own tables per object, so it is refused.
    """
    if isinstance(ctx, Context):
        return ctx
    if isinstance(ctx, Parameters):
        raise TypeError(
            f"{who} takes a Context, not Parameters: "
            "build a gpubfv.Context(params, backend) and pass it"
        )
    raise TypeError(f"{who} takes a gpubfv.Context, got {type(ctx).__name__}")


def _context_for(params: Parameters, backend: Backend | str) -> Context:
    # For gpubfv.serialization only: a decoded object has its Parameters but no Context, and
    # decoding many frames of one parameter set must share one set of tables, so the Context
    # is cached per backend name on the Parameters object itself (a frozen dataclass, hence
    # the private slot set through object.__setattr__).
    if not isinstance(params, Parameters):
        raise TypeError(f"expected Parameters, got {type(params).__name__}")
    be = get_backend(backend) if isinstance(backend, str) else backend
    cache_ = params.__dict__.get("_contexts")
    if cache_ is None:
        cache_ = {}
        object.__setattr__(params, "_contexts", cache_)
    ctx = cache_.get(be.name)
    if ctx is None:
        ctx = cache_[be.name] = Context(params, be)
    return ctx
