"""`python -m gpubfv.mhe --peers K --bits B [--smudging statistical|renyi] [--decryptions D]`.

Prints the planner's parameters, the smudging notion with lambda, the decryption budget D and
the achieved bound, and the ciphertext bytes per value on the wire. Bad input: one line on
stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from gpubfv.mhe.noise import NoiseBudgetError
from gpubfv.mhe.planner import choose_parameters
from gpubfv.mhe.smudging import LAM_RANGE, NOTIONS, Smudging

PROG = "python -m gpubfv.mhe"


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, plan, print; exit 2 with one line on bad input."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    ap.error = _fail  # type: ignore[method-assign]  # one line, not usage + message
    ap.add_argument("--peers", "-k", type=int, required=True, help="number of peers K")
    ap.add_argument("--bits", "-b", type=int, default=16, help="bits per (offset) value")
    ap.add_argument(
        "--lam", type=int, default=40, help=f"smudging security parameter {LAM_RANGE[0]}..256"
    )
    ap.add_argument("--smudging", choices=NOTIONS, default="statistical", help="notion")
    ap.add_argument(
        "--decryptions", "-D", type=int, default=1, help="decryption budget D (ciphertext rows)"
    )
    ap.add_argument("--fail-bits", type=int, default=40, help="decryption failure 2^-bits")
    args = ap.parse_args(argv)
    if args.peers < 1:
        _fail(f"--peers must be >= 1, got {args.peers}")
    if args.bits < 1:
        _fail(f"--bits must be >= 1, got {args.bits}")
    try:
        spec = Smudging(args.decryptions, args.smudging, args.lam, args.fail_bits)
        plan = choose_parameters(args.peers, args.bits, smudging=spec)
    except (ValueError, TypeError) as exc:  # NoiseBudgetError is a ValueError
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    n = plan.params.n
    print(plan.describe())
    print(plan.params.describe())
    print(spec.describe(plan.sigma, plan.wire_noise.std, n))
    print(
        f"notion={spec.notion} lambda={spec.lam} D={spec.budget} "
        f"log2_distance={plan.log2_distance:.1f} ({spec.argument})"
    )
    print(f"ciphertext bytes per value on the wire: {plan.bytes_per_value:.2f}")


__all__ = ["NoiseBudgetError", "main"]

if __name__ == "__main__":
    main()
