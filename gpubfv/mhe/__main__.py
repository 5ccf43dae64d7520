"""`python -m gpubfv.mhe --peers K --bits B [--lam 40]`: the planner's parameters and wire size."""

from __future__ import annotations

import argparse

from gpubfv.mhe.noise import choose_parameters
from gpubfv.params import Parameters


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gpubfv.mhe", description=__doc__)
    ap.add_argument("--peers", "-k", type=int, required=True, help="number of peers K")
    ap.add_argument("--bits", "-b", type=int, default=16, help="bits per (offset) value")
    ap.add_argument("--lam", type=int, default=40, help="smudging statistical parameter")
    args = ap.parse_args(argv)
    plan = choose_parameters(args.peers, args.bits, lam=args.lam)
    print(plan.describe())
    print(Parameters(plan.literal).describe())
    print(f"ciphertext bytes per value on the wire: {plan.bytes_per_value:.2f}")


if __name__ == "__main__":
    main()
