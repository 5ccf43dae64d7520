"""Per-step cost of DP-SGD's Gaussian noise: torch.normal (Opacus' default) against
:meth:`RandomBits.normal` (ChaCha20 + Box-Muller, what :mod:`dmhe.privacy.csprng_opacus` adds).

Usage: ``python benchmarks/bench_dpsgd_noise.py [values]`` (default 101,770: the digits MLP).
"""

from __future__ import annotations

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
        print(f"{name:18s} values={n} best_ms={best:.2f} median_ms={median:.2f}")


if __name__ == "__main__":
    main()
