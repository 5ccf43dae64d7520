"""Exact discrete Gaussian samples per second (CKS sampler from ChaCha20 bits), one core.

Usage: ``python benchmarks/bench_dp_noise.py [variance] [count]`` (defaults 10^6 and 2^17).
"""

from __future__ import annotations

import sys
import time

from dmhe.privacy import RandomBits
from dmhe.privacy.discrete_gaussian import discrete_gaussian


def main() -> None:
    """Time one call of :func:`discrete_gaussian` and print samples/s."""
    s = int(sys.argv[1]) if len(sys.argv) > 1 else 10**6
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 17
    bits = RandomBits(bytes(32))
    t0 = time.perf_counter()
    discrete_gaussian(bits, s, n)
    dt = time.perf_counter() - t0
    print(f"variance={s} count={n} seconds={dt:.2f} samples/s={n / dt:,.0f}")


if __name__ == "__main__":
    main()
