"""Paired seed sweep: distributed discrete Gaussian (DDG) against central DP, one eps at a time.

For every seed it runs the same `dmhe train` command twice, once with `--mode dp-trusted-sum`
(central DP: the exact Gaussian on the sum, a trusted aggregator) and once with
`--mode ddp-plaintext` (the DDG pipeline, bit-exact equal to `encrypted-dp`), and records the
mean test accuracy of the last rounds of each. The seed fixes the data split and the initial
model; the DP noise comes from the CSPRNG and differs between any two runs, which is why a
judgement needs many seeds.

Each finished pair is appended as one JSON line to `--record` at once, so an interrupted sweep
keeps what it measured and a later invocation skips the seeds already recorded. `--report`
prints the paired difference (DDG - central) with its 95% Student-t interval from the record.

    python benchmarks/dp_seed_sweep.py --eps 2 --seeds 53-110 --record benchmarks/dp_sweep.jsonl
    python benchmarks/dp_seed_sweep.py --eps 2 --record benchmarks/dp_sweep.jsonl --report
    python benchmarks/dp_seed_sweep.py --eps 2 --record R --report --pool 49,-0.17,3.54
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy import stats

MODES = ("dp-trusted-sum", "ddp-plaintext")
ROOT = Path(__file__).resolve().parent.parent


def _seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if a < 0 or b < a:
            raise argparse.ArgumentTypeError(f"bad seed range {part!r}")
        out.extend(range(a, b + 1))
    return out


def _command(args: argparse.Namespace, mode: str, seed: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dmhe",
        "train",
        "--model",
        args.model,
        "--peers",
        str(args.peers),
        "--rounds",
        str(args.rounds),
        "--local-steps",
        str(args.local_steps),
        "--mode",
        mode,
        "--dp-epsilon",
        str(args.eps),
        "--seed",
        str(seed),
        "--no-progress",
        "-o",
        str(out),
    ]


def _last_rounds_mean(run_dir: Path, last: int) -> tuple[float, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    acc = [float(r["accuracy"]) for r in rows if "accuracy" in r]
    if len(acc) < last:
        raise RuntimeError(f"{run_dir}: {len(acc)} rounds recorded, {last} needed")
    return statistics.fmean(acc[-last:]), acc[-1]


def _run_pair(args: argparse.Namespace, seed: int, tmp: Path) -> dict:
    row: dict = {
        "eps": args.eps,
        "seed": seed,
        "peers": args.peers,
        "model": args.model,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "last": args.last,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for mode in MODES:
        out = tmp / f"{mode}-e{args.eps}-s{seed}"
        done = subprocess.run(
            _command(args, mode, seed, out),
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if done.returncode:
            raise RuntimeError(
                f"{mode} seed {seed} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        row[mode], row[mode + "@last"] = _last_rounds_mean(out, args.last)
    return row


def _recorded(path: Path, args: argparse.Namespace) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = ("eps", "peers", "model", "rounds", "local_steps", "last")
    return [r for r in rows if all(r[k] == getattr(args, k) for k in keys)]


def pooled(n1: int, m1: float, s1: float, d: list[float]) -> tuple[int, float, float, float]:
    """(n, mean, sd, 95% half-width) of an earlier sample given by its summary (n1 paired
    differences of mean m1 and sample std s1) pooled with the differences ``d``: the exact
    combined mean and sample variance (within- plus between-sample sums of squares)."""
    n2, m2 = len(d), statistics.fmean(d)
    s2 = statistics.stdev(d)
    n = n1 + n2
    m = (n1 * m1 + n2 * m2) / n
    ss = (n1 - 1) * s1**2 + (n2 - 1) * s2**2 + n1 * (m1 - m) ** 2 + n2 * (m2 - m) ** 2
    sd = math.sqrt(ss / (n - 1))
    return n, m, sd, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def report(rows: list[dict], prior: tuple[int, float, float] | None = None) -> str:
    """The paired DDG - central difference (percentage points) with its 95% t-interval; with
    ``prior`` (n, mean, sd of an earlier sample of the same setting, not recorded here) also
    the two pooled, on the mean of the last rounds."""
    if len(rows) < 2:
        return f"{len(rows)} paired seeds recorded: too few for an interval"
    lines = []
    if prior is not None:
        d = [100 * (r["ddp-plaintext"] - r["dp-trusted-sum"]) for r in rows]
        n, m, sd, half = pooled(*prior, d)
        lines.append(
            f"pooled with the earlier {prior[0]} seeds: DDG - central {m:+.2f} pp, 95% "
            f"[{m - half:+.2f}, {m + half:+.2f}] (sd {sd:.2f}, {n - 1} df)"
        )
    for suffix, what in (("", "mean of the last rounds"), ("@last", "final round")):
        d = [100 * (r["ddp-plaintext" + suffix] - r["dp-trusted-sum" + suffix]) for r in rows]
        n, mean, sd = len(d), statistics.fmean(d), statistics.stdev(d)
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        central = [r["dp-trusted-sum" + suffix] for r in rows]
        ddg = [r["ddp-plaintext" + suffix] for r in rows]
        lines.append(
            f"{what}: central {statistics.fmean(central):.3f} +- {statistics.stdev(central):.3f}, "
            f"DDG {statistics.fmean(ddg):.3f} +- {statistics.stdev(ddg):.3f}; DDG - central "
            f"{mean:+.2f} pp, 95% [{mean - half:+.2f}, {mean + half:+.2f}] "
            f"(sd {sd:.2f}, {n - 1} df)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--eps", type=float, required=True, help="target epsilon of both runs")
    p.add_argument("--seeds", type=_seeds, default=[], help="e.g. 1-50 or 1-10,20-30")
    p.add_argument("--record", type=Path, required=True, help="JSON-lines file of finished pairs")
    p.add_argument("--report", action="store_true", help="only print the interval from --record")
    p.add_argument("--peers", type=int, default=64)
    p.add_argument("--model", default="logreg")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--last", type=int, default=3, help="rounds averaged at the end (default 3)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="pairs run at once (default 2)")
    p.add_argument(
        "--pool",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        help="N,MEAN,SD (pp) of an earlier sample of the same setting to pool with the record",
    )
    args = p.parse_args(argv)
    if (
        not (math.isfinite(args.eps) and args.eps > 0)
        or min(args.peers, args.rounds, args.jobs, args.local_steps, args.last) < 1
    ):
        p.error("eps must be positive and finite; peers, rounds, steps, last and jobs >= 1")
    if args.last > args.rounds:
        p.error("--last cannot exceed --rounds")
    if not args.report:
        done = {r["seed"] for r in _recorded(args.record, args)}
        todo = [s for s in args.seeds if s not in done]
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
            for row in pool.map(lambda s: _run_pair(args, s, Path(tmp)), todo):
                with args.record.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"seed {row['seed']}: central {row['dp-trusted-sum']:.4f} "
                    f"DDG {row['ddp-plaintext']:.4f}",
                    flush=True,
                )
    prior = None
    if args.pool is not None:
        if len(args.pool) != 3 or args.pool[0] < 2 or not all(map(math.isfinite, args.pool)):
            p.error("--pool takes N,MEAN,SD with N >= 2")
        prior = (int(args.pool[0]), args.pool[1], args.pool[2])
    print(report(_recorded(args.record, args), prior))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
