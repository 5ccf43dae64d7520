"""Per-step cost of DP-SGD's Gaussian noise: torch.normal (Opacus' default) against
:meth:`RandomBits.normal` (ChaCha20 + Box-Muller, what :mod:`dmhe.privacy.csprng_opacus` adds).

Usage: ``python benchmarks/bench_dpsgd_noise.py [values]`` (default 101,770: the digits MLP).
Each row prints OMP_WAIT_POLICY and the load average: on the shared 2-core machine torch's
spin-waiting OpenMP workers made a step ~144 ms instead of ~8 (``OMP_WAIT_POLICY=passive``,
set before Python starts, removes it; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import torch

from dmhe.privacy import RandomBits


def _ms(f: Callable[[], object], k: int = 9) -> tuple[float, float]:
    ts = []
    for _ in range(k):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[0] * 1e3, ts[k // 2] * 1e3


def main() -> None:
    """Print best and median milliseconds per step for both noise sources."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 101_770
    bits = RandomBits(None)
    bits.normal(16)  # compile / warm the kernel
    for name, f in (
        ("torch.normal", lambda: torch.normal(0.0, 1.0, size=(n,))),
        ("RandomBits.normal", lambda: bits.normal(n)),
    ):
        best, median = _ms(f)
        print(
            f"{name:18s} values={n} best_ms={best:.2f} median_ms={median:.2f} "
            f"torch_threads={torch.get_num_threads()} "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')} "
            f"load1={os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
