"""Microbenchmark: CPU NTT / INTT, microseconds per limb-transform, N = 2^12..2^16, 30-bit primes.

Usage: python benchmarks/bench_ntt_cpu.py [--rows 64] [--logn 12 13 14 15 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.cpu import chacha20_blocks, ntt_forward, ntt_inverse  # noqa: E402
from kernels.ntt_tables import generate_ntt_primes, make_ntt_tables  # noqa: E402


def ntt_primes(n: int, k: int, bits: int = 30) -> list[int]:
    return generate_ntt_primes([bits] * k, n)


def best_of(fn, reps: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64, help="M*L limb-rows per call")
    ap.add_argument("--limbs", type=int, default=4)
    ap.add_argument("--logn", type=int, nargs="*", default=[12, 13, 14, 15, 16])
    args = ap.parse_args()
    nthreads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    print(f"rows per call = {args.rows}, threads available = {nthreads}")
    print(f"{'N':>6} {'mode':>10} {'fwd us/limb':>12} {'inv us/limb':>12}")
    for logn in args.logn:
        n = 1 << logn
        mods = ntt_primes(n, args.limbs)
        t = make_ntt_tables(mods, n)
        m = max(1, args.rows // args.limbs)
        a = np.stack([rng.integers(0, q, (m, n)) for q in mods], axis=1).astype(np.uint32)
        rows = m * args.limbs
        reps = max(1, int(4e6 // (n * rows)))
        for mode, par, th in (("1 thread", False, 1), (f"{nthreads} thr par", True, nthreads)):
            numba.set_num_threads(th)
            x = a.copy()
            ntt_forward(x, t, parallel=par)
            ntt_inverse(x, t, parallel=par)
            f = best_of(lambda x=x, par=par, t=t: ntt_forward(x, t, parallel=par), reps)
            i = best_of(lambda x=x, par=par, t=t: ntt_inverse(x, t, parallel=par), reps)
            print(f"{n:>6} {mode:>10} {f / rows * 1e6:>12.1f} {i / rows * 1e6:>12.1f}")
        numba.set_num_threads(nthreads)
    key = np.arange(8, dtype=np.uint32)
    nonce = np.arange(3, dtype=np.uint32)
    nb = 1 << 16
    for th in (1, nthreads):
        numba.set_num_threads(th)
        chacha20_blocks(key, nonce, 0, nb)
        dt = best_of(lambda: chacha20_blocks(key, nonce, 0, nb), 5)
        print(f"chacha20_blocks {th} thread(s): {nb * 64 / dt / 1e6:.0f} MB/s")
    numba.set_num_threads(nthreads)


if __name__ == "__main__":
    main()
