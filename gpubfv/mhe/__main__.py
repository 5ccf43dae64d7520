"""`python -m gpubfv.mhe --peers K --bits b --params P [--notion stat|renyi --rounds R]`.

Plans one encrypted aggregation round of a model of P values among K peers and prints it in
user terms: megabytes each peer sends per round, bytes per value and what they are spent on,
the ring size and how many values share a coefficient, and the security notion in words.
`--decryptions D` plans for a fixed decryption budget instead of R rounds of P values.
Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from gpubfv.mhe.noise import NoiseBudgetError
from gpubfv.mhe.planner import AggregationPlan, choose_parameters, choose_parameters_for_updates
from gpubfv.mhe.smudging import LAM_RANGE, Smudging

PROG = "python -m gpubfv.mhe"
MAX_BITS = 52  # the encrypted aggregator's value range (dequantized through float64)
NOTION_NAMES = {"stat": "statistical", "statistical": "statistical", "renyi": "renyi"}
PASS_WORDS = {
    "ciphertext": "encrypted updates, summed along the ring (rounded c0 + full c1)",
    "c1": "the summed c1 again, which every peer needs for its decryption share",
    "share": "decryption shares (rounded), summed along the ring",
    "plaintext": "the decrypted sums, sent to every peer",
}


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _count(text: str) -> int:
    """A positive count, also written as 1e6 or 11.2e6 (it must be a whole number)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(value)


def _notion_words(spec: Smudging, plan: AggregationPlan) -> str:
    if spec.notion == "statistical":
        return (
            f"statistical smudging (the default): every decryption share carries fresh noise "
            f"so wide that, over the {spec.budget:,} decryptions planned for, what the peers see "
            f"is within statistical distance 2^{plan.log2_distance:.0f} of what they would see "
            "if the ciphertext noise (which depends on the secret keys) were absent"
        )
    return (
        f"renyi smudging (opt-in): the share noise is 2^{spec.lam / 2:.0f} times the ciphertext "
        "noise; a Renyi-divergence argument covers key-recovery (search) attacks only, it is no "
        "statistical-distance guarantee"
    )


def _report(plan: AggregationPlan, spec: Smudging, values: int) -> None:
    k, n = plan.peers, plan.params.n
    split = plan.round_split(values)
    total = sum(split.values())
    fp32 = 2 * (k - 1) / k * 4
    print(
        f"Encrypted aggregation of a model of {values:,} values among {k} peers "
        f"({plan.value_bits}-bit values):"
    )
    print(
        f"  each peer sends {total * values / 1e6:.2f} MB per round = {total:.2f} bytes per "
        f"value ({total / fp32:.2f}x a float32 ring all-reduce, {fp32:.2f} B/value):"
    )
    for name, words in PASS_WORDS.items():
        print(f"    {split[name]:6.2f} B/value  {name:10s} {words}")
    rows = plan.rows_for(values)
    print(
        f"  ciphertexts of N = {n:,} coefficients, {plan.pack} values per coefficient "
        f"({plan.width} bits each: {plan.value_bits} bits plus {plan.width - plan.value_bits} "
        f"bits of room for the sum of {k} peers), {rows} ciphertexts per round "
        f"({rows * n * plan.pack - values:,} padding values)"
    )
    print(
        f"  ciphertexts travel modulo a {plan.wire_bits}-bit Q' (the 'wire level': "
        f"{plan.level} of its {len(plan.params.q)} primes); c0 and decryption shares are "
        f"rounded to {plan.compressed_bits} bits (the bits below only carry smudging noise)"
    )
    print(f"  security: {_notion_words(spec, plan)}")
    print(f"  plan: {plan.describe()}")
    print(f"  parameters: {plan.params.describe()}")
    print(f"  {spec.describe(plan.sigma, plan.wire_noise.std, n)}")
    print(
        f"  notion={spec.notion} lambda={spec.lam} D={spec.budget} "
        f"log2_distance={plan.log2_distance:.1f} ({spec.argument})"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, plan, print; exit 2 with one line on bad input."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    ap.error = _fail  # type: ignore[method-assign]  # one line, not usage + message
    ap.add_argument("--peers", "-k", type=int, required=True, help="number of peers K")
    ap.add_argument("--bits", "-b", type=int, default=16, help=f"bits per value, 1..{MAX_BITS}")
    ap.add_argument(
        "--params", "-P", type=_count, default=1 << 20, help="values in the model (1e6 works)"
    )
    ap.add_argument("--rounds", "-R", type=_count, default=1000, help="rounds the keys serve")
    ap.add_argument(
        "--notion", "--smudging", dest="notion", choices=sorted(NOTION_NAMES),
        default="statistical", help="smudging notion: stat(istical, default) or renyi",
    )  # fmt: skip
    ap.add_argument(
        "--lam", type=int, default=40, help=f"smudging security parameter {LAM_RANGE[0]}..256"
    )
    ap.add_argument(
        "--decryptions", "-D", type=_count, default=None,
        help="a fixed decryption budget D (ciphertexts) instead of rounds x ciphertexts/round",
    )  # fmt: skip
    ap.add_argument("--fail-bits", type=int, default=40, help="decryption failure 2^-bits")
    args = ap.parse_args(argv)
    if args.peers < 1:
        _fail(f"--peers must be >= 1, got {args.peers}")
    if not 1 <= args.bits <= MAX_BITS:
        _fail(
            f"--bits must be in 1..{MAX_BITS} (the encrypted aggregator's range), got {args.bits}"
        )
    notion = NOTION_NAMES[args.notion]
    try:
        if args.decryptions is not None:
            spec = Smudging(args.decryptions, notion, args.lam, args.fail_bits)
            plan = choose_parameters(
                args.peers, args.bits, smudging=spec, values_per_round=args.params
            )
        else:
            plan = choose_parameters_for_updates(
                args.peers, args.bits, values_per_round=args.params, rounds=args.rounds,
                notion=notion, lam=args.lam, fail_bits=args.fail_bits,
            )  # fmt: skip
            spec = plan.smudging
    except (ValueError, TypeError) as exc:  # NoiseBudgetError is a ValueError
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    _report(plan, spec, args.params)


__all__ = ["NoiseBudgetError", "main"]

if __name__ == "__main__":
    main()
