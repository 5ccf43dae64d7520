"""GPU benchmarks: kernels, scheme and one encrypted aggregation round, against the copy roof.

Order: (1) device-to-device copy bandwidth, the reference every figure is compared with;
(2) batched forward NTT, N = 2^12..2^16, L in {1, 4, 16}, batch in {1, 16, 256};
(3) K-way ciphertext sum (one pass); (4) encrypt and decrypt throughput through the gpubfv API;
(5) one multiparty decryption share (gpubfv.mhe.Party.decryption_share, smudging included);
(6) one dmhe aggregation round of a `--round-values` update (default 100M values) over K = 2
in-process peers: EncryptedAggregator on the device's tensors (torch CUDA tensors by DLPack)
against the plaintext ring all-reduce of the same values (PlaintextAggregator, host int64).
Every line prints the achieved GB/s and the fraction of the measured copy bandwidth, and --out
writes the same figures as a markdown table (with card and versions).

Byte counts (the "bandwidth floor" of each operation, each word read once and written once):
  copy: 2 * bytes (read + write);  NTT: 2 * 4*B*L*N;  K-way sum: (K + 1) * 4*M*L*N;
  encrypt: 4 * ciphertext words written + 8 * plaintext words read;  decrypt: the reverse;
  decryption share: 4 * c1 words read + 4 * share words written.
Fraction = achieved GB/s / copy GB/s. Targets (DESIGN §6, issue 11): NTT >= 0.5, K-way sum >= 0.8,
encryption >= 10 G values/s, encrypted round <= 1.2 x the plaintext round.

`--backend cpu` runs the same code on the CPU kernels with numpy arrays and wall-clock timing
(with --tiny: what the test suite runs, so the script cannot rot); the default `cuda` refuses
with the reason when no GPU (or no CuPy) is there.

Usage: python benchmarks/bench_gpu.py --out benchmarks/gpu_results.md [--quick] [--verify]
       python benchmarks/bench_gpu.py --backend cpu --tiny --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1e9


def _require_gpu():
    """CuPy with a visible CUDA device, or SystemExit saying which piece is missing."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise SystemExit("bench_gpu.py measures a real GPU; unset NUMBA_ENABLE_CUDASIM")
    try:
        import cupy
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise SystemExit(
            f"bench_gpu: no GPU here: CuPy is not importable ({exc}); pip install 'gpubfv[gpu]',"
            " or run --backend cpu"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - no driver
        raise SystemExit(f"bench_gpu: no GPU here: CUDA driver unusable ({exc})") from None
    if count < 1:  # pragma: no cover
        raise SystemExit("bench_gpu: no GPU here: no CUDA device visible")
    return cupy


class Device:
    """Where the benchmark runs: the array module, the kernels, a timer."""

    def __init__(self, name: str) -> None:
        if name not in ("cuda", "cpu"):
            raise SystemExit(f"bench_gpu: unknown backend {name!r} (cuda or cpu)")
        self.name = name
        self.cupy = _require_gpu() if name == "cuda" else None
        self.xp = self.cupy if self.cupy is not None else np
        if self.cupy is not None:
            import kernels.cuda as kernels
        else:
            import kernels.cpu as kernels  # type: ignore[no-redef]
        self.K = kernels

    def asnumpy(self, a):
        """A host copy of a device (or host) array."""
        return self.cupy.asnumpy(a) if self.cupy is not None else np.asarray(a)

    def sync(self) -> None:
        """Wait for the device's queued work."""
        if self.cupy is not None:
            self.cupy.cuda.get_current_stream().synchronize()

    def time(self, fn, reps: int, rounds: int = 3) -> float:
        """Best-of-`rounds` mean seconds per call (CUDA events on a GPU, wall clock on CPU)."""
        fn()  # warm-up (and kernel compilation)
        self.sync()
        best = float("inf")
        for _ in range(rounds):
            if self.cupy is None:
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                best = min(best, (time.perf_counter() - t0) / reps)
                continue
            start, stop = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            for _ in range(reps):
                fn()
            stop.record()
            stop.synchronize()
            best = min(best, self.cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps)
        return best


def ntt_primes(n: int, k: int, bits: int = 30) -> list[int]:
    from kernels.ntt_tables import generate_ntt_primes

    return generate_ntt_primes([bits] * k, n)


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


def bench_copy(dev: Device, nbytes: int) -> float:
    src = dev.xp.ones(nbytes // 4, dtype=np.uint32)
    dst = dev.xp.empty_like(src)
    sec = dev.time(lambda: dst.__setitem__(Ellipsis, src), reps=20)
    bw = 2 * nbytes / sec  # read + write
    print(f"copy       {nbytes / 2**20:.0f} MiB D2D {'':<18} {sec * 1e6:>11.1f} us "
          f"{bw / GB:>9.1f} GB/s (read+write counted)")  # fmt: skip
    return bw


def bench_ntt(dev: Device, rep: Report, logns, limbs, batches, tile: int, threads: int) -> None:
    from kernels.ntt_tables import make_ntt_tables

    G = dev.K
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
                a = dev.xp.asarray(host)
                kw = {"tile": tile} if tile and dev.cupy is not None else {}
                if threads and dev.cupy is not None:
                    kw["threads"] = threads
                nbytes = 2 * 4 * words
                sec = dev.time(lambda a=a, t=tables, kw=kw: G.ntt_forward(a, t, **kw),
                               reps_for(nbytes))  # fmt: skip
                rep.add("ntt-fwd", f"N=2^{logn} L={L} B={B}", sec, nbytes,
                        f"{sec / (B * L) * 1e9:.0f} ns/limb")  # fmt: skip


def bench_sum(dev: Device, rep: Report, cases) -> None:
    G = dev.K
    for K, M, L, logn in cases:
        n = 1 << logn
        q_host = np.array(ntt_primes(n, L), dtype=np.uint32)
        q = dev.xp.asarray(q_host)
        a = dev.xp.asarray(
            (np.random.default_rng(1).integers(0, 2**20, (K, M, L, n))).astype(np.uint32)
        )
        out = dev.xp.empty((M, L, n), dtype=np.uint32)
        nbytes = (K + 1) * 4 * M * L * n
        sec = dev.time(lambda a=a, q=q, out=out: G.sum_batch(a, q, out), reps_for(nbytes))
        rep.add("sum", f"K={K} M={M} L={L} N=2^{logn}", sec, nbytes,
                f"{K * M * n / sec / 1e9:.2f} G coeff-sums/s")  # fmt: skip


def bench_scheme(dev: Device, rep: Report, presets, batches) -> None:
    from gpubfv import (
        Backend,
        BatchEncoder,
        Context,
        Decryptor,
        Encryptor,
        KeyGenerator,
        preset,
    )

    be_dev = Backend(dev.name)
    for name in presets:
        params = preset(name)
        ctx = Context(params, be_dev)
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
            vals = dev.xp.asarray(
                np.random.default_rng(2).integers(-1000, 1000, (B, n), dtype=np.int64)
            )
            pt = encoder.encode(vals)
            ct = enc.encrypt(pt)
            ct_bytes = 4 * B * 2 * L * n
            pt_bytes = 8 * B * n
            sec = dev.time(lambda pt=pt, enc=enc: enc.encrypt(pt), reps=5)
            rep.add("encrypt", f"{name} (N={n} L={L}) B={B}", sec, ct_bytes + pt_bytes,
                    f"{B * n / sec / 1e9:.3f} G values/s")  # fmt: skip
            sec = dev.time(lambda ct=ct, dec=dec: dec.decrypt(ct), reps=5)
            rep.add("decrypt", f"{name} (N={n} L={L}) B={B}", sec, ct_bytes + pt_bytes,
                    f"{B * n / sec / 1e9:.3f} G values/s")  # fmt: skip


def bench_share(dev: Device, rep: Report, k: int, values: int) -> None:
    """One peer's decryption share of a `values`-value aggregate (fresh journal each time)."""
    from gpubfv import PRNG, CoefficientEncoder, Encryptor, Evaluator, KeyGenerator, get_backend
    from gpubfv.context import Context
    from gpubfv.mhe import (
        CollectiveDecrypt,
        NoiseEstimate,
        Party,
        PublicKeyGen,
        ShareJournal,
        choose_parameters_for_updates,
    )

    plan = choose_parameters_for_updates(k, 16, values_per_round=values, rounds=1000)
    p = plan.params
    ctx = Context(p, get_backend(dev.name))
    encoder = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    batch = -(-values // encoder.slots)
    rngs = [PRNG(bytes([i + 1, 9]) * 16) for i in range(k)]
    sks = [KeyGenerator(ctx, prng=rngs[i]).gen_secret_key() for i in range(k)]
    run_dir = tempfile.mkdtemp(prefix="bench-gpu-")
    fresh = itertools.count()

    def party(i: int) -> Party:
        journal = ShareJournal.open(f"{run_dir}/peer{i}-{next(fresh)}.journal")
        return Party(ctx, sks[i], peer_id=i, journal=journal, prng=rngs[i])

    ckg = PublicKeyGen(ctx, peers=k)
    crp = ckg.sample_crp(b"\x5b" * 32)
    pk = ckg.finalize(ckg.aggregate([party(i).public_key_share(ckg, crp) for i in range(k)]), crp)
    ev = Evaluator(ctx)
    data = np.random.default_rng(5).integers(0, 1 << 15, (batch, encoder.slots), dtype=np.int64)
    ct = Encryptor(ctx, pk, prng=rngs[0]).encrypt(encoder.encode(dev.xp.asarray(data)))
    total = ev.sum([ev.mod_switch_to(ct, plan.level)] * k)
    noise = NoiseEstimate.fresh(p, k).mod_switch(p, plan.level, k).summed(k)
    cd = CollectiveDecrypt(ctx, noise, peers=k, smudging=plan.smudging)
    sec = dev.time(lambda: party(0).decryption_share(cd, total), reps=3)
    c1_words = total.data[:, 1].size
    rep.add("dec-share", f"K={k} {batch} ct (N={p.n} L={plan.level + 1})", sec, 8 * c1_words,
            f"{batch * encoder.slots / sec / 1e9:.3f} G values/s")  # fmt: skip


def _round(dev: Device, k: int, make, values_of, n: int) -> tuple[float, bool]:
    """Wall seconds of one all-reduce round of K in-process peers (after set-up and a small
    warm-up round), and whether every peer got the exact sum."""
    from dmhe.transport import run_peers

    aggs = [make() for _ in range(k)]
    mark: dict[str, float] = {}

    def peer(t):
        agg = aggs[t.rank]
        agg.setup(t)
        agg.allreduce_sum(t, values_of(t.rank, 1 << 12))  # warm-up: kernels compiled
        dev.sync()
        t.barrier()
        if t.rank == 0:
            mark["t0"] = time.perf_counter()
        out = agg.allreduce_sum(t, values_of(t.rank, n))
        dev.sync()
        t.barrier()
        if t.rank == 0:
            mark["t1"] = time.perf_counter()
        return out

    res = run_peers(k, peer)
    want = values_of(None, n)
    ok = all(np.array_equal(np.asarray(r), want) for r in res)
    return mark["t1"] - mark["t0"], ok


def bench_round(dev: Device, rep: Report, k: int, n: int) -> None:
    """An encrypted dmhe aggregation round of an n-value update against the plaintext round."""
    import torch

    from dmhe.aggregators.encrypted import EncryptedAggregator
    from dmhe.aggregators.plaintext import PlaintextAggregator

    device = "cuda" if dev.cupy is not None else "cpu"
    probe = EncryptedAggregator(k, device=device, values=n)
    bound = probe.offset // 2
    gen = torch.Generator(device=device).manual_seed(0)
    base = torch.randint(-bound, bound + 1, (n,), dtype=torch.int64, device=device, generator=gen)
    shift = sum((r % 3) - 1 for r in range(k))

    def update(rank: int | None, size: int):
        # the peer's update as a tensor on the device; rank None: the expected host sum
        if rank is None:
            return k * base[:size].cpu().numpy() + shift
        return base[:size] + ((rank % 3) - 1)

    enc_s, enc_ok = _round(
        dev, k, lambda: EncryptedAggregator(k, device=device, values=n), update, n
    )
    plain_s, plain_ok = _round(
        dev, k, lambda: PlaintextAggregator(k), lambda r, m: _host(update(r, m)), n
    )
    if not (enc_ok and plain_ok):
        raise SystemExit(
            f"bench_gpu: aggregation round inexact (encrypted {enc_ok}, plain {plain_ok})"
        )
    nbytes = 8 * n * (k + 1)  # each peer's update read once, the sum written once
    ratio = enc_s / plain_s
    rep.add("round-enc", f"K={k} n={n:.3g} on {device} tensors", enc_s, nbytes,
            f"{ratio:.2f} x plaintext round (target <= 1.20)")  # fmt: skip
    rep.add("round-plain", f"K={k} n={n:.3g} (host int64 ring)", plain_s, nbytes, "")


def _host(values):
    return values if isinstance(values, np.ndarray) else values.cpu().numpy()


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


def versions(dev: Device) -> list[str]:
    """Header lines: the card (or the CPU), toolkit and library versions, the date."""
    import numba

    common = [
        f"- backend {dev.name}; numba {numba.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}",
        f"- date {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    cupy = dev.cupy
    if cupy is None:
        return [
            f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        ] + common
    d = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(d.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return [
        f"- card: {name} (cc {props['major']}.{props['minor']}, "
        f"{props['totalGlobalMem'] / 2**30:.0f} GiB)",
        f"- CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}, cupy {cupy.__version__}",
    ] + common


def main(argv: list[str] | None = None) -> None:
    """CLI: run the benchmarks, print each row, write the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="markdown table output path")
    ap.add_argument("--backend", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="a small subset (smoke test)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--verify", action="store_true", help="check GPU == CPU first")
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--tile", type=int, default=0, help="NTT shared-memory tile (words)")
    ap.add_argument("--threads", type=int, default=0, help="NTT threads per block")
    ap.add_argument("--skip-scheme", action="store_true")
    ap.add_argument("--round-values", type=int, default=100_000_000, help="values per update")
    ap.add_argument("--peers", type=int, default=2, help="K for the share and the round")
    args = ap.parse_args(argv)

    dev = Device(args.backend)
    header = ["# gpubfv GPU benchmarks", ""] + versions(dev)
    print("\n".join(header))
    if args.verify and dev.cupy is not None:
        verify(dev.cupy)

    copy_mib = 16 if args.tiny else args.copy_mib
    copy_bw = bench_copy(dev, copy_mib * 2**20)
    header.append(f"- measured copy bandwidth: {copy_bw / GB:.1f} GB/s (read + write)")
    rep = Report(copy_bw)
    round_values = args.round_values
    if args.tiny:
        logns, limbs, batches = [10], [2], [2]
        sum_cases = [(4, 2, 2, 10)]
        presets, enc_batches = ["PN12"], [1]
        share_values, round_values = 4096, min(round_values, 20_000)
    elif args.quick:
        logns, limbs, batches = [12, 16], [1, 4], [1, 16]
        sum_cases = [(16, 4, 4, 12)]
        presets, enc_batches = ["PN12"], [16]
        share_values = 1 << 20
    else:
        logns, limbs, batches = [12, 13, 14, 15, 16], [1, 4, 16], [1, 16, 256]
        sum_cases = [(4, 64, 4, 13), (16, 16, 4, 13), (64, 4, 4, 13), (16, 8, 16, 16)]
        presets, enc_batches = ["PN12", "PN13", "PN14"], [16, 256]
        share_values = 1 << 22
    bench_ntt(dev, rep, logns, limbs, batches, args.tile, args.threads)
    bench_sum(dev, rep, sum_cases)
    if not args.skip_scheme:
        bench_scheme(dev, rep, presets, enc_batches)
        bench_share(dev, rep, args.peers, share_values)
        bench_round(dev, rep, args.peers, round_values)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(rep.markdown(header))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
