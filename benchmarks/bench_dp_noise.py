"""Exact discrete Gaussian samples per second (CKS sampler kernel from ChaCha20 bits).

Usage: ``python benchmarks/bench_dp_noise.py [variance] [count] [reps]`` (defaults 10^6, 2^17
and 5). Prints the first call (in a fresh process it loads the compiled kernel from numba's
cache, or compiles it) apart from the steady state (best and median of ``reps`` calls), with
the machine's load average, since the 2-core machine is shared.
"""

from __future__ import annotations

import os
import sys
import time

from dmhe.privacy import RandomBits
from dmhe.privacy.discrete_gaussian import discrete_gaussian


def main() -> None:
    """Time :func:`discrete_gaussian` and print samples/s."""
    s = int(sys.argv[1]) if len(sys.argv) > 1 else 10**6
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 17
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    bits = RandomBits(bytes(32))
    t0 = time.perf_counter()
    discrete_gaussian(bits, s, 16)
    first = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        discrete_gaussian(bits, s, n)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    best, median = ts[0], ts[len(ts) // 2]
    print(
        f"variance={s} count={n} first_call_s={first:.2f} best_s={best:.4f} "
        f"samples/s best={n / best:,.0f} median={n / median:,.0f} "
        f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
