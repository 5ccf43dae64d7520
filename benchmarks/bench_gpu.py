"""GPU benchmarks (run on a machine with an NVIDIA GPU and CuPy; cannot run under the simulator).

Order: (1) device-to-device copy bandwidth, the reference every figure is compared with;
(2) batched forward NTT, N = 2^12..2^16, L in {1, 4, 16}, batch in {1, 16, 256};
(3) K-way ciphertext sum (one pass); (4) encrypt and decrypt throughput through the gpubfv API
with Backend("cuda"). Every line prints the achieved GB/s and the fraction of the measured copy
bandwidth, and --out writes the same figures as a markdown table (with card and versions).

Byte counts (the "bandwidth floor" of each operation, each word read once and written once):
  copy: 2 * bytes (read + write);  NTT: 2 * 4*B*L*N;  K-way sum: (K + 1) * 4*M*L*N;
  encrypt: 4 * ciphertext words written + 8 * plaintext words read;  decrypt: the reverse.
Fraction = achieved GB/s / copy GB/s. Targets (DESIGN §6, issue 4): NTT >= 0.5, K-way sum >= 0.8,
encryption >= 10 G values/s.

Usage: python benchmarks/bench_gpu.py --out benchmarks/gpu_results.md [--quick] [--verify]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1e9


def _require_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise SystemExit("bench_gpu.py measures a real GPU; unset NUMBA_ENABLE_CUDASIM")
    try:
        import cupy
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise SystemExit(f"CuPy is required ({exc}); pip install 'gpubfv[gpu]'") from None
    if cupy.cuda.runtime.getDeviceCount() < 1:  # pragma: no cover
        raise SystemExit("no CUDA device visible")
    return cupy


def ntt_primes(n: int, k: int, bits: int = 30) -> list[int]:
    from kernels.ntt_tables import generate_ntt_primes

    return generate_ntt_primes([bits] * k, n)


def gpu_time(cupy, fn, reps: int, rounds: int = 3) -> float:
    """Best-of-`rounds` mean seconds per call, timed with CUDA events on the current stream."""
    fn()  # warm-up (and kernel compilation)
    cupy.cuda.get_current_stream().synchronize()
    best = float("inf")
    for _ in range(rounds):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps)
    return best


def reps_for(nbytes: float, target_bytes: float = 4e9) -> int:
    return int(max(3, min(200, target_bytes // max(nbytes, 1))))


class Report:
    def __init__(self, copy_bw: float) -> None:
        self.copy_bw = copy_bw
        self.rows: list[tuple[str, str, float, float, str]] = []

    def add(self, what: str, shape: str, seconds: float, nbytes: float, extra: str = "") -> None:
        gbs = nbytes / seconds / GB
        frac = gbs * GB / self.copy_bw if self.copy_bw else float("nan")
        self.rows.append((what, shape, seconds, gbs, extra))
        us = seconds * 1e6
        print(f"{what:<10} {shape:<34} {us:>11.1f} us {gbs:>9.1f} GB/s {frac:>6.1%} {extra}")

    def markdown(self, header: list[str]) -> str:
        lines = header + [
            "",
            "| what | shape | time (us) | GB/s | fraction of copy bw | notes |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        for what, shape, sec, gbs, extra in self.rows:
            frac = gbs * GB / self.copy_bw if self.copy_bw else float("nan")
            lines.append(
                f"| {what} | {shape} | {sec * 1e6:.1f} | {gbs:.1f} | {frac:.1%} | {extra} |"
            )
        return "\n".join(lines) + "\n"


def bench_copy(cupy, nbytes: int) -> float:
    src = cupy.ones(nbytes // 4, dtype=cupy.uint32)
    dst = cupy.empty_like(src)
    sec = gpu_time(cupy, lambda: dst.__setitem__(Ellipsis, src), reps=20)
    bw = 2 * nbytes / sec  # read + write
    print(f"copy       {nbytes / 2**20:.0f} MiB D2D {'':<18} {sec * 1e6:>11.1f} us "
          f"{bw / GB:>9.1f} GB/s (read+write counted)")  # fmt: skip
    return bw


def bench_ntt(cupy, rep: Report, logns, limbs, batches, tile: int, threads: int) -> None:
    import kernels.cuda as G
    from kernels.ntt_tables import make_ntt_tables

    rng = np.random.default_rng(0)
    for logn in logns:
        n = 1 << logn
        mods_all = ntt_primes(n, max(limbs))
        for L in limbs:
            tables = make_ntt_tables(mods_all[:L], n)
            q = np.array(mods_all[:L], dtype=np.uint64)[None, :, None]
            for B in batches:
                words = B * L * n
                if words * 4 > 2 * 2**30:
                    continue
                host = (rng.integers(0, 2**62, (B, L, n), dtype=np.uint64) % q).astype(np.uint32)
                a = cupy.asarray(host)
                kw = {"tile": tile} if tile else {}
                if threads:
                    kw["threads"] = threads
                nbytes = 2 * 4 * words
                sec = gpu_time(cupy, lambda a=a, t=tables, kw=kw: G.ntt_forward(a, t, **kw),
                               reps_for(nbytes))  # fmt: skip
                rep.add("ntt-fwd", f"N=2^{logn} L={L} B={B}", sec, nbytes,
                        f"{sec / (B * L) * 1e9:.0f} ns/limb")  # fmt: skip


def bench_sum(cupy, rep: Report, cases) -> None:
    import kernels.cuda as G

    for K, M, L, logn in cases:
        n = 1 << logn
        q_host = np.array(ntt_primes(n, L), dtype=np.uint32)
        q = cupy.asarray(q_host)
        a = cupy.asarray(
            (np.random.default_rng(1).integers(0, 2**20, (K, M, L, n))).astype(np.uint32)
        )
        out = cupy.empty((M, L, n), dtype=cupy.uint32)
        nbytes = (K + 1) * 4 * M * L * n
        sec = gpu_time(cupy, lambda a=a, q=q, out=out: G.sum_batch(a, q, out), reps_for(nbytes))
        rep.add("sum", f"K={K} M={M} L={L} N=2^{logn}", sec, nbytes,
                f"{K * M * n / sec / 1e9:.2f} G coeff-sums/s")  # fmt: skip


def bench_scheme(cupy, rep: Report, presets, batches) -> None:
    from gpubfv import (
        Backend,
        BatchEncoder,
        Context,
        Decryptor,
        Encryptor,
        KeyGenerator,
        preset,
    )

    be_cuda = Backend("cuda")
    for name in presets:
        params = preset(name)
        ctx = Context(params, be_cuda)
        kg = KeyGenerator(ctx)
        sk = kg.gen_secret_key()
        pk = kg.gen_public_key(sk)
        enc = Encryptor(ctx, pk)
        dec = Decryptor(ctx, sk)
        encoder = BatchEncoder(ctx)
        n, L = params.n, len(params.q)
        for B in batches:
            if B * 2 * L * n * 4 > 2 * 2**30:
                continue
            vals = cupy.asarray(
                np.random.default_rng(2).integers(-1000, 1000, (B, n), dtype=np.int64)
            )
            pt = encoder.encode(vals)
            ct = enc.encrypt(pt)
            ct_bytes = 4 * B * 2 * L * n
            pt_bytes = 8 * B * n
            sec = gpu_time(cupy, lambda pt=pt, enc=enc: enc.encrypt(pt), reps=5)
            rep.add("encrypt", f"{name} (N={n} L={L}) B={B}", sec, ct_bytes + pt_bytes,
                    f"{B * n / sec / 1e9:.3f} G values/s")  # fmt: skip
            sec = gpu_time(cupy, lambda ct=ct, dec=dec: dec.decrypt(ct), reps=5)
            rep.add("decrypt", f"{name} (N={n} L={L}) B={B}", sec, ct_bytes + pt_bytes,
                    f"{B * n / sec / 1e9:.3f} G values/s")  # fmt: skip


def verify(cupy) -> None:
    """CPU vs GPU exact equality at realistic sizes (a quick sanity check before timing)."""
    import kernels.cpu as K
    import kernels.cuda as G
    from kernels.ntt_tables import make_ntt_tables

    rng = np.random.default_rng(3)
    for logn, L, B in ((12, 3, 4), (16, 4, 2)):
        n = 1 << logn
        mods = ntt_primes(n, L)
        tables = make_ntt_tables(mods, n)
        a = np.stack([rng.integers(0, q, (B, n)) for q in mods], axis=1).astype(np.uint32)
        ref = a.copy()
        K.ntt_forward(ref, tables)
        got = cupy.asarray(a)
        G.ntt_forward(got, tables)
        ok = np.array_equal(cupy.asnumpy(got), ref)
        K.ntt_inverse(ref, tables)
        G.ntt_inverse(got, tables)
        ok &= np.array_equal(cupy.asnumpy(got), ref)
        print(f"verify ntt N=2^{logn} L={L} B={B}: {'OK' if ok else 'MISMATCH'}")
        if not ok:
            raise SystemExit(1)
    key = np.arange(8, dtype=np.uint32)
    nonce = np.arange(3, dtype=np.uint32)
    for name in ("sample_ternary", "sample_cbd"):
        ok = np.array_equal(
            cupy.asnumpy(getattr(G, name)(key, nonce, 1 << 20)),
            getattr(K, name)(key, nonce, 1 << 20),
        )
        print(f"verify {name} 2^20: {'OK' if ok else 'MISMATCH'}")
        if not ok:
            raise SystemExit(1)


def versions(cupy) -> list[str]:
    import numba

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return [
        f"- card: {name} (cc {props['major']}.{props['minor']}, "
        f"{props['totalGlobalMem'] / 2**30:.0f} GiB)",
        f"- CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}",
        f"- cupy {cupy.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}",
        f"- date {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="markdown table output path")
    ap.add_argument("--quick", action="store_true", help="a small subset (smoke test)")
    ap.add_argument("--verify", action="store_true", help="check GPU == CPU first")
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--tile", type=int, default=0, help="NTT shared-memory tile (words)")
    ap.add_argument("--threads", type=int, default=0, help="NTT threads per block")
    ap.add_argument("--skip-scheme", action="store_true")
    args = ap.parse_args(argv)

    cupy = _require_gpu()
    header = ["# gpubfv GPU benchmarks", ""] + versions(cupy)
    print("\n".join(header))
    if args.verify:
        verify(cupy)

    copy_bw = bench_copy(cupy, args.copy_mib * 2**20)
    header.append(f"- measured D2D copy bandwidth: {copy_bw / GB:.1f} GB/s (read + write)")
    rep = Report(copy_bw)
    if args.quick:
        logns, limbs, batches = [12, 16], [1, 4], [1, 16]
        sum_cases = [(16, 4, 4, 12)]
        presets, enc_batches = ["PN12"], [16]
    else:
        logns, limbs, batches = [12, 13, 14, 15, 16], [1, 4, 16], [1, 16, 256]
        sum_cases = [(4, 64, 4, 13), (16, 16, 4, 13), (64, 4, 4, 13), (16, 8, 16, 16)]
        presets, enc_batches = ["PN12", "PN13", "PN14"], [16, 256]
    bench_ntt(cupy, rep, logns, limbs, batches, args.tile, args.threads)
    bench_sum(cupy, rep, sum_cases)
    if not args.skip_scheme:
        bench_scheme(cupy, rep, presets, enc_batches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(rep.markdown(header))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
