"""Parameters on the wire: canonical JSON of the explicit literal, refused when insecure or
when it borrows a preset's name, unless the receiver opts in.

The plaintext modulus is the JSON integer field "t" in every version of this body. A wide
t = 2^k (62 <= k <= MAX_WIDE_PLAIN_BITS = 256) is the same field with more digits (at most 78):
frames of sets with a prime t < 2^61 are unchanged byte for byte (and so are fingerprints), so
every frame written before wide t existed still decodes, and the frame format version stays 2
on purpose. A reader that predates wide t refuses such a set with "parameter field 't' holds
...", never misreads it. Untrusted input: t is range-checked (<= 2^256) and, above 2^61, must be
a power of two before `Parameters` runs anything costly; a primality test only ever sees a
t < 2^61.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from gpubfv.params import (
    MAX_MODULUS_BITS,
    MAX_PLAIN_BITS,
    MAX_WIDE_PLAIN_BITS,
    PRESETS,
    ParameterError,
    Parameters,
)
from gpubfv.params import ParametersLiteral as _Literal
from gpubfv.serialization.errors import SerializationError
from gpubfv.serialization.format import TYPE_PARAMETERS, Codec, Frame, add_codec

MAX_PARAMS_BODY = 1 << 14  # a literal of MAX_MODULI explicit 30-bit primes is ~1.5 kB
MAX_MODULI = 128  # Q and P together: PN16 uses 59; more is no real set, only primality work


def canonical_body(p: Parameters) -> bytes:
    """The one encoding of a set: sorted keys, no spaces, explicit moduli."""
    return json.dumps(p.to_literal_dict(), sort_keys=True, separators=(",", ":")).encode()


def _enc_params(p: Parameters) -> tuple[int, bytes]:
    return 0, canonical_body(p)


@cache
def _preset_body(name: str) -> bytes:
    return canonical_body(Parameters(PRESETS[name]))


def _checked_literal(d: Any) -> _Literal:
    """Type and range checks before `Parameters` runs primality tests on untrusted numbers."""
    if not isinstance(d, dict):
        raise SerializationError("parameters body is not a JSON object")
    fields = set(_Literal.__dataclass_fields__)
    if set(d) - fields:
        raise SerializationError(f"unknown parameter fields {sorted(set(d) - fields)}")

    def ints(key: str, bits: int) -> int:
        v = d.get(key, [])
        if not isinstance(v, list) or len(v) > MAX_MODULI:
            raise SerializationError(f"parameter field {key!r} is not a list of <= {MAX_MODULI}")
        for x in v:
            if type(x) is not int or not 0 < x < 1 << bits:
                raise SerializationError(f"parameter field {key!r} holds {x!r}")
        return len(v)

    if ints("q", MAX_MODULUS_BITS) + ints("p", MAX_MODULUS_BITS) > MAX_MODULI:
        raise SerializationError(f"more than {MAX_MODULI} moduli in Q and P")
    ints("q_bits", 8)
    ints("p_bits", 8)
    wide_t = 1 << MAX_WIDE_PLAIN_BITS
    for key, hi in (("log_n", 16), ("t", wide_t), ("t_bits", MAX_WIDE_PLAIN_BITS)):
        v = d.get(key, 0)
        if type(v) is not int or not 0 <= v <= hi:
            raise SerializationError(f"parameter field {key!r} holds {v!r}")
    t = d.get("t", 0)
    if t >= 1 << MAX_PLAIN_BITS and t & (t - 1):
        raise SerializationError(f"parameter field 't' above 2^{MAX_PLAIN_BITS} is not 2^k")
    for key in ("batching", "allow_insecure"):
        if type(d.get(key, False)) is not bool:
            raise SerializationError(f"parameter field {key!r} is not a boolean")
    if not isinstance(d.get("name", ""), str):
        raise SerializationError("parameter field 'name' is not a string")
    try:
        return _Literal.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"bad parameters literal: {exc}") from None


def _dec_params(frame: Frame) -> Parameters:
    body, given = bytes(frame.body), frame.params
    if given is not None:
        # the receiver's own set: it opted in when it built it; anything else "differs"
        if frame.fingerprint != given.fingerprint or body != canonical_body(given):
            raise SerializationError("parameters differ from the ones given")
        return given
    if len(body) > MAX_PARAMS_BODY:
        raise SerializationError(f"parameters body of {len(body)} bytes is implausibly large")
    try:
        d = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"parameters body is not JSON: {exc}") from None
    lit = _checked_literal(d)
    if lit.q_bits or lit.p_bits or lit.t_bits:
        # the canonical form lists the moduli: refuse before any prime search runs
        raise SerializationError("parameters body is not in canonical form (bit sizes, not moduli)")
    if lit.allow_insecure and not frame.allow_insecure:
        raise SerializationError(
            f"insecure parameter set {lit.name or f'logN={lit.log_n}'!r} refused: the frame "
            "marks it insecure; a receiver that wants it passes from_bytes(..., "
            "allow_insecure=True)"
        )
    if lit.name in PRESETS and body != _preset_body(lit.name):
        raise SerializationError(
            f"parameters named {lit.name!r} are not the preset of that name: refused"
        )
    try:
        params = Parameters(lit)
    except ParameterError as exc:
        raise SerializationError(f"parameters refused: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise SerializationError(f"bad parameters: {exc}") from None
    if params.fingerprint != frame.fingerprint:
        raise SerializationError("parameters do not match the fingerprint in their header")
    if canonical_body(params) != body:
        # duplicate keys, ignored fields (t_bits next to t), other spacing: one set, one encoding
        raise SerializationError("parameters body is not in canonical form")
    return params


add_codec(Codec(TYPE_PARAMETERS, Parameters, _enc_params, _dec_params, 0))
