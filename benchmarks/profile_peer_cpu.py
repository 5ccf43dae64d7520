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

``encrypted``: ONE peer's full encrypted round (``EncryptedAggregator.allreduce_sum``, the
``auto`` topology, the plan for K, 2^20 values), process CPU. The round runs on coefficient
slices (``dmhe.aggregators.encrypted_slices``): every ciphertext's positions are cut into K
chunks, so every peer moves the same bytes. Real, on that peer: the encode, encrypt, switch and
c0 compression of its values; the decode, seal checks and additions of every slice it receives
and the encoding of every partial sum it sends; the c1 all-gather; its smudged decryption share
of every ciphertext (journal on disk, fresh per run); the decode, checks and sums of the shares
it receives (each chunk's header column checked against K x its c1 digest); the opening of its
own positions and the plaintext all-gather. Replayed (built once, untimed): the other K-1
peers' messages, from one precomputed encryption (its slice i stands for every partial sum of
slice i), its c1 and a throwaway party's share, with each share chunk's header set to the
sender count the schedule really delivers in that message (a symbolic run of all K peers'
reduce-scatter on sets), so every check passes as in a real round. The collective key is one
party's key (set-up runs once per run, not per round); what is opened from replayed partial
sums is not the sum (same CPU). Ranks: 0, K/2 and K-1 (the slices are even: no rank is heavier).

``--profile`` prints the cProfile top 12 instead of the timings.

    PYTHONPATH=. python benchmarks/profile_peer_cpu.py plain --ks 4 64 1000 --reps 31
    PYTHONPATH=. python benchmarks/profile_peer_cpu.py empty --reps 7
    PYTHONPATH=. python benchmarks/profile_peer_cpu.py encrypt --ks 4 1000 --reps 3
    PYTHONPATH=. python benchmarks/profile_peer_cpu.py encrypted --ks 4 64 1000 --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmhe.aggregators.encrypted_slices import SliceLayout, SliceRound  # noqa: E402
from dmhe.collectives import (  # noqa: E402
    RING,
    ChunkBuffer,
    Codec,
    Scheduled,
    _indices,
    all_reduce_array,
)
from dmhe.framing import pack_blobs  # noqa: E402
from dmhe.peercpu import _Replayed, reduce_scatter_senders  # noqa: E402
from dmhe.recordbuffer import RecordBuffer  # noqa: E402
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


class EncryptedPeer:
    """One peer of a K-peer encrypted round, alone, with the others' messages replayed (see
    the module docstring): ``run()`` is one real ``allreduce_sum`` of this peer."""

    def __init__(self, k: int, rank: int, topology: str = "auto") -> None:
        import tempfile

        from dmhe.aggregators.encrypted import EncryptedAggregator
        from gpubfv import PRNG, KeyGenerator
        from gpubfv.mhe import Party, ShareJournal

        self.k, self.rank = k, rank
        agg = EncryptedAggregator(
            k, value_bits=16, values=2**20, rounds=1000, lam=40, topology=topology
        )
        agg.topology = agg.topology_for(k, int(agg.values * agg.bytes_per_value), passes=4)
        topo = agg.topology
        if not isinstance(topo, Scheduled):
            raise TypeError(f"{topo!r} has no step lists")
        self.agg, self.topo, self._PRNG = agg, topo, PRNG
        self._Party, self._Journal = Party, ShareJournal
        self._tmp = tempfile.TemporaryDirectory(prefix="peercpu-")
        keys = KeyGenerator(agg.ctx, PRNG(b"k" * 32))
        self.sk = keys.gen_secret_key()
        agg._pk = keys.gen_public_key(self.sk)
        rng = np.random.default_rng(rank)
        off = agg.offset
        self.values = rng.integers(-off, off + 1, size=2**20, dtype=np.int64)
        self.n_ct = n_ct = agg.ciphertexts(2**20)
        lay = SliceLayout(agg, n_ct, k)
        # the others' partial sums: one precomputed encryption (its chunk i stands for every
        # partial sum of chunk i), its c1 rows, and random sub-values for the plaintext
        agg._prng = PRNG(b"o" * 32)
        nobody = _Replayed(rank, k, defaultdict(deque))
        other_values = rng.integers(-off, off + 1, size=2**20, dtype=np.int64)
        other = SliceRound(agg, nobody, n_ct).encrypt(other_values)
        c1_other = RecordBuffer(np.ascontiguousarray(other.data[lay.w :]), lay.offsets, lay.c1_rows)
        widths = np.array(lay.plain_widths, dtype=np.uint64)[:, None]
        plain = rng.integers(0, 2**63, (len(widths), lay.positions), dtype=np.uint64)
        plain_other = RecordBuffer(
            (plain % (np.uint64(1) << widths)).astype(np.uint32), lay.offsets, lay.plain_rows
        )
        rs, own = topo.reduce_scatter_steps(k, rank)
        ag = topo.all_gather_steps(k, rank, own)
        log: dict[int, deque[bytes]] = defaultdict(deque)
        self._add(log, rs, other)
        self._add(log, ag, c1_other)
        # a dry run of this peer's first two passes (deterministic encryption): its c1 digest
        agg._prng = PRNG(b"p" * 32)
        dry = SliceRound(agg, _Replayed(rank, k, log), n_ct)
        buf = dry.encrypt(self.values)
        mine = buf.chunk(dry.reduce_ciphertexts(buf))
        c1 = dry.gather_c1(mine, own)
        agg._party = Party(
            agg.ctx,
            KeyGenerator(agg.ctx, PRNG(b"h" * 32)).gen_secret_key(),
            peer_id=rank,
            journal=ShareJournal.in_memory(unsafe_not_persistent=True),
        )
        words, digest = dry.share(c1)  # a throwaway party's share: the others' shares' bytes
        log = defaultdict(deque)
        self._add(log, rs, other)
        self._add(log, ag, c1_other)
        # each received share message: every chunk's header is (senders in it) x the digest
        msgs = iter(reduce_scatter_senders(topo, k, list(range(k)), rank))
        for what, peer, runs in rs:
            if what == "send":
                continue
            sets = next(msgs)
            held = RecordBuffer(words.copy(), lay.share_offsets, lay.word_rows)
            for i, bits in sets.items():
                held.chunk(i)[:, :1] = lay.header(digest, bin(bits).count("1"))
            self._add(log, [(what, peer, runs)], held)
        self._add(log, ag, plain_other)
        self.log = log
        self.runs = 0

    def _add(self, log: dict[int, deque[bytes]], steps: list, buf: RecordBuffer) -> None:
        """What ``steps`` receive, from ``buf``: one message per step, or per chunk."""
        for what, peer, runs in steps:
            if what == "send":
                continue
            if self.topo.batch:
                log[peer].append(buf.message(runs))
            else:
                log[peer].extend(buf.message(((i, 1),)) for i in _indices(self.k, runs))

    @contextlib.contextmanager
    def _cpu_phase(self, name: str) -> Iterator[None]:
        """The aggregator's phase timer, in process CPU instead of wall time."""
        t0 = time.process_time()
        try:
            yield
        finally:
            timings = self.agg.timings
            timings[name] = timings.get(name, 0.0) + time.process_time() - t0

    def run(self) -> _Replayed:
        """One round of this peer, on a fresh journal (a real one, on disk)."""
        agg = self.agg
        self.runs += 1
        journal = self._Journal.open(Path(self._tmp.name) / f"journal-{self.runs}")
        agg._journal = journal
        agg._prng = self._PRNG(b"p" * 32)
        agg._party = self._Party(agg.ctx, self.sk, peer_id=self.rank, journal=journal)
        t = _Replayed(self.rank, self.k, self.log)
        agg._phase = self._cpu_phase  # type: ignore[method-assign]
        agg.allreduce_sum(t, self.values)
        if any(t._log.values()):
            raise RuntimeError(f"peer {self.rank}: the round received less than replayed")
        return t


def encrypted(k: int, reps: int, profile: bool, ranks: list[int] | None = None) -> None:
    """One peer's full encrypted round at K, alone (see the module docstring)."""
    if ranks is None:  # chunks are even: any ranks; 0, the middle and the last
        ranks = sorted({0, k // 2, k - 1})
    for rank in ranks:
        peer = EncryptedPeer(k, rank)
        peer.run()  # warm-up: numba, tables, caches
        times, phases = [], defaultdict(list)
        prof = cProfile.Profile() if profile else None
        for _ in range(reps):
            gc.collect()
            if prof:
                prof.enable()
            t0 = time.process_time()
            t = peer.run()
            times.append(time.process_time() - t0)
            if prof:
                prof.disable()
            for name, sec in peer.agg.timings.items():
                phases[name].append(sec)
        if prof:
            print(f"=== {peer.topo.name} K={k} rank {rank}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
            continue
        wall = ", ".join(f"{n} {statistics.median(v) * 1e3:.0f}" for n, v in phases.items())
        print(
            f"K={k:5d} {peer.topo.name:14s} rank {rank:4d} ({peer.n_ct} ct) CPU ms median "
            f"{statistics.median(times) * 1e3:7.1f} min "
            f"{min(times) * 1e3:7.1f}  MiB sent {sum(t.bytes_sent.values()) / 2**20:6.2f} recv "
            f"{sum(t.bytes_received.values()) / 2**20:6.2f}  CPU ms: {wall}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Print peer 0's CPU per round for each topology and K."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["plain", "empty", "encrypt", "encrypted"])
    ap.add_argument("--ks", type=int, nargs="*", default=[4, 64, 1000])
    ap.add_argument("--topologies", nargs="*", default=list(TOPOS), choices=list(TOPOS))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ranks", type=int, nargs="*", help="encrypted: the ranks (default: see doc)")
    args = ap.parse_args(argv)
    if args.reps < 1 or any(k < 1 for k in args.ks):
        ap.error("need --reps >= 1 and K >= 1")
    if args.what == "empty" and any(k not in PLAN_CTS for k in args.ks):
        ap.error(f"empty: K must be one of {sorted(PLAN_CTS)}")
    if args.what == "encrypt":
        for k in args.ks:
            encrypt(k, args.reps)
        return 0
    if args.what == "encrypted":
        if args.ranks and any(not 0 <= r < k for r in args.ranks for k in args.ks):
            ap.error(f"--ranks must lie in [0, K) for every K of {args.ks}")
        for k in args.ks:
            encrypted(k, args.reps, args.profile, args.ranks)
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
