"""One peer's CPU per aggregation round vs K, alone, for the scale section of RESULTS.md.

``plain``: one plaintext round (``all_reduce_array`` of 2^20 uint32 values, the path of
bench_scale) on peer 0, run alone as ``dmhe.peercpu.peer_cpu`` runs it, but on messages built
from the schedule (the layout and sizes peer 0 receives; the values are not the partial sums,
which costs the same CPU) so that K = 1000 needs no 1000-thread run first. Prints the median and
minimum thread CPU of ``--reps`` runs, the MiB peer 0 moves (sent + received) and the CPU per MiB.

``empty``: the encrypted round's four collectives through the generic per-chunk executor at the
plan's ciphertext count (5 at K = 4, 6 at 64, 8 at 1000: the rest of the K chunks are empty),
with a codec that does no work: the collectives' own Python per round, crypto left out.

``encrypt``: one peer's encode + encrypt + switch to the wire level of its 2^20 values under
the plan for K (``choose_parameters_for_updates``, statistical, 1000 rounds): process CPU, so
backend threads count too.

``--profile`` prints the cProfile top 12 instead of the timings.

    PYTHONPATH=. python benchmarks/profile_peer_cpu.py plain --ks 4 64 1000 --reps 31
    PYTHONPATH=. python benchmarks/profile_peer_cpu.py empty --reps 7
    PYTHONPATH=. python benchmarks/profile_peer_cpu.py encrypt --ks 4 1000 --reps 3
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmhe.collectives import RING, ChunkBuffer, Codec, Scheduled, all_reduce_array  # noqa: E402
from dmhe.framing import pack_blobs  # noqa: E402
from dmhe.peercpu import _Replayed  # noqa: E402
from dmhe.topologies import BRUCK, BRUCK_BATCHED, HALVING_BATCHED  # noqa: E402

TOPOS = {t.name: t for t in (RING, BRUCK, BRUCK_BATCHED, HALVING_BATCHED)}
#: ciphertexts per round of 2^20 16-bit values (``bench_scale.encrypted_sizes``)
PLAN_CTS = {4: 5, 64: 6, 1000: 8}


def _log(k: int, topo: Scheduled, chunk: object, steps: list) -> dict[int, deque[bytes]]:
    """What peer 0 receives, per source, for ``steps`` (``chunk(i)``: chunk i's bytes)."""
    log: dict[int, deque[bytes]] = defaultdict(deque)
    for what, peer, runs in steps:
        if what == "send":
            continue
        blobs = [chunk((s + j) % k) for s, c in runs for j in range(c)]  # type: ignore[operator]
        log[peer].extend([pack_blobs(blobs)] if topo.batch else blobs)
    return log


def _schedule(k: int, topo: Scheduled) -> list:
    steps, own = topo.reduce_scatter_steps(k, 0)
    return steps + topo.all_gather_steps(k, 0, own)


def plain(k: int, topo: Scheduled, reps: int, profile: bool) -> None:
    """Peer 0's CPU for one plaintext round at K, alone."""
    values = np.random.default_rng(1).integers(0, 2**16, size=2**20, dtype=np.uint32)
    buf = ChunkBuffer.split(values, k, values.dtype)
    log = _log(k, topo, buf.raw, _schedule(k, topo))
    times, moved = [], 0
    prof = cProfile.Profile() if profile else None
    for _ in range(reps):
        t = _Replayed(0, k, log)
        gc.collect()
        if prof:
            prof.enable()
        t0 = time.thread_time()
        all_reduce_array(t, values, topo)
        times.append(time.thread_time() - t0)
        if prof:
            prof.disable()
        moved = sum(t.bytes_sent.values()) + sum(t.bytes_received.values())
    if prof:
        print(f"=== {topo.name} K={k}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        return
    med, mib = statistics.median(times), moved / 2**20
    print(
        f"{topo.name:16s} K={k:5d} CPU ms median {med * 1e3:6.2f} min {min(times) * 1e3:6.2f}"
        f"  MiB moved {mib:6.2f}  ms/MiB {med * 1e3 / mib:.3f}",
        flush=True,
    )


def empty(k: int, topo: Scheduled, reps: int) -> None:
    """The encrypted round's collectives at the plan's ciphertext count, codec work left out."""
    count = PLAN_CTS[k]
    sizes = [(i + 1) * count // k - i * count // k for i in range(k)]  # the spread layout
    chunks = [b"x" * 64 * s for s in sizes]
    codec: Codec[bytes] = Codec(
        encode=lambda c: c, decode=lambda b, _i: b, combine=lambda a, b: a or b
    )
    log = _log(k, topo, chunks.__getitem__, _schedule(k, topo))
    times = []
    for _ in range(reps):
        t = _Replayed(0, k, log)
        gc.collect()
        t0 = time.thread_time()
        i, c = topo.reduce_scatter(t, chunks, codec)
        topo.all_gather(t, i, c, codec)
        times.append(time.thread_time() - t0)
    ms = 2 * statistics.median(times) * 1e3  # ciphertexts + c1, then shares + sums
    print(f"{topo.name:16s} K={k:5d} {count} ct: collectives' own CPU per round {ms:6.2f} ms")


def encrypt(k: int, reps: int) -> None:
    """One peer's encryption work per round under the plan for K."""
    from gpubfv import CoefficientEncoder, Encryptor, Evaluator, KeyGenerator, get_backend
    from gpubfv.context import Context
    from gpubfv.mhe import choose_parameters_for_updates

    plan = choose_parameters_for_updates(
        k, 16, values_per_round=2**20, rounds=1000, notion="statistical", lam=40
    )
    ctx = Context(plan.params, get_backend("cpu"))
    enc = CoefficientEncoder(ctx, pack=plan.pack, width=plan.width)
    rows = -(-(2**20) // enc.slots)
    keys = KeyGenerator(ctx)
    encryptor, ev = Encryptor(ctx, keys.gen_public_key(keys.gen_secret_key())), Evaluator(ctx)
    x = np.random.default_rng(0).integers(0, 2**16, (rows, enc.slots), dtype=np.int64)
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        ev.mod_switch_to(encryptor.encrypt(enc.encode(x)), plan.level)
        times.append(time.process_time() - t0)
    med = statistics.median(times) * 1e3
    print(f"K={k:5d} N={plan.params.n} {rows} ciphertexts: encrypt CPU ms median {med:7.1f}")


def main(argv: list[str] | None = None) -> int:
    """Print peer 0's CPU per round for each topology and K."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["plain", "empty", "encrypt"])
    ap.add_argument("--ks", type=int, nargs="*", default=[4, 64, 1000])
    ap.add_argument("--topologies", nargs="*", default=list(TOPOS), choices=list(TOPOS))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    if args.reps < 1 or any(k < 1 for k in args.ks):
        ap.error("need --reps >= 1 and K >= 1")
    if args.what == "empty" and any(k not in PLAN_CTS for k in args.ks):
        ap.error(f"empty: K must be one of {sorted(PLAN_CTS)}")
    if args.what == "encrypt":
        for k in args.ks:
            encrypt(k, args.reps)
        return 0
    for name in args.topologies:
        for k in args.ks:
            if args.what == "plain":
                plain(k, TOPOS[name], args.reps, args.profile)
            else:
                empty(k, TOPOS[name], args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
