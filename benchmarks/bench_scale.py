"""Round time and bytes per peer for K = 4 ... 10,000 peers: ring vs log-depth collectives.

Aggregation only (no training), on the link profiles of ``dmhe.netmodel`` (datacenter
25 Gb/s + 0.05 ms, regional 1 Gb/s + 5 ms, internet 100 Mb/s + 20 ms). Two workloads of
2^20 16-bit values per peer:

* ``plain``: the summed values as uint32 (exact for K < 65,536): one reduce-scatter and one
  all-gather of 4 MiB. For K <= --max-threaded the K peers really run (threads, the real
  collectives and codecs) over simulated links: row source ``simulated``. Above, the per-peer
  compute is a fit ``c0 + a * messages + b * bytes`` to those runs and the schedule is replayed
  (``dmhe.netmodel.replay``; the ring in closed form): source ``modeled``.
* ``encrypted``: the encrypted round's four collectives (ciphertext reduce-scatter, c1
  all-gather, decryption-share reduce-scatter, plaintext all-gather) with the wire sizes of
  the real parameter plan for K (``choose_parameters_for_updates(K, 16, values_per_round=2^20,
  rounds=1000)``, statistical smudging, lambda = 40; c0 and shares at the compressed width, as
  on the wire), network time only, always modeled, for two chunk layouts: ``slices`` (the
  aggregator's: the batch's coefficient positions cut evenly into K chunks) and ``whole``
  (whole ciphertexts spread over the K chunk indices: the threshold round's).

The per-peer CPU table runs chosen peers alone on the messages they received
(``dmhe.peercpu.peer_cpu``) beside their thread CPU in the K-thread simulation. ``--save`` and
``--load`` let the plain and encrypted parts run as two processes and be merged; ``--bytes-only``
prints the encrypted round's max and mean bytes sent per peer per topology (seconds).

Writes a PNG of round time vs K next to this file (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_lines, markdown_table  # noqa: E402
from scale_plot import make_plot  # noqa: E402

from dmhe.collectives import all_reduce_array  # noqa: E402
from dmhe.netmodel import PROFILES, replay, simulate  # noqa: E402
from dmhe.peercpu import peer_cpu  # noqa: E402
from dmhe.topologies import (  # noqa: E402
    BRUCK,
    BRUCK_BATCHED,
    HALVING,
    HALVING_BATCHED,
    RING,
    collective_program,
    collective_steps,
)

TOPOS = {
    "ring": RING,
    "halving": HALVING,
    "halving-batched": HALVING_BATCHED,
    "bruck": BRUCK,
    "bruck-batched": BRUCK_BATCHED,
}
N_VALUES = 2**20
KS = [4, 8, 16, 32, 64, 128, 256, 1000, 1024, 4096, 10_000]


def plain_round(t, values: np.ndarray, topo) -> np.ndarray:
    """One plaintext round: the uint32 values (wrapping mod 2**32, exact below it) reduce-
    scattered and all-gathered by ``all_reduce_array``, the path of the plaintext and secagg
    aggregators (one buffer per peer, a few numpy calls per message)."""
    return all_reduce_array(t, values, topo)


def _blocks(n_bytes_per_unit: float, units: list[int]) -> list[int]:
    return [int(math.ceil(u * n_bytes_per_unit)) for u in units]


def _program(name: str, kinds_blocks: list[tuple[str, list[int]]], k: int) -> list[list]:
    progs: list[list] = [[] for _ in range(k)]
    for kind, blocks in kinds_blocks:
        step = collective_program(name, kind, k, blocks)
        for r in range(k):
            progs[r].extend(step[r])
    return progs


def ring_replay(k: int, kinds_blocks, link: str, a: float = 0.0, b: float = 0.0) -> float:
    """The ring's schedule under the same model as ``replay``, vectorised over peers (numpy):
    step s of every peer at once, so K = 10,000 takes seconds, not hours."""
    prof = PROFILES[link]
    r = np.arange(k)
    clock, free = np.zeros(k), np.zeros(k)
    for kind, blocks in kinds_blocks:
        sizes = np.asarray(blocks, dtype=np.float64)
        start = 0 if kind == "rs" else 1
        for s in range(k - 1):
            out = sizes[(r + start - s) % k]  # what r sends to r + 1 at this step
            clock += a + b * out
            depart = np.maximum(clock, free)
            busy = 8.0 * out / prof.bandwidth
            free = depart + busy
            arrival = np.roll(depart + busy + prof.latency, 1)  # from r - 1
            clock = np.maximum(clock, arrival) + a + b * np.roll(out, 1)
    return float(clock.max())


def modeled(name, k, kinds_blocks, link, fit=(0.0, 0.0, 0.0, 0.0)):
    """(round seconds, steps, max bytes sent per peer) from the replayed schedule; ``fit`` is
    the compute model (c0, per message, per chunk, per byte)."""
    c0, a_msg, a_chunk, b = fit
    if name == "ring":
        sent = np.zeros(k)
        for kind, blocks in kinds_blocks:
            arr = np.asarray(blocks, dtype=np.float64)
            kept = arr[(np.arange(k) + (1 if kind == "rs" else 0)) % k]  # the one not sent
            sent += arr.sum() - kept
        steps = len(kinds_blocks) * (k - 1)
        t = ring_replay(k, kinds_blocks, link, a_msg + a_chunk, b)
        return c0 + t, steps, int(sent.max())
    batched = name.endswith("-batched")
    progs = _program(name.removesuffix("-batched"), kinds_blocks, k)
    if batched:  # one message per op, carrying its chunks and their lengths
        progs = [[(w, p, nb + 4 * (nm + 1), nm) for w, p, nb, nm in ops] for ops in progs]
        kw = dict(per_op=a_msg, per_message=a_chunk)
    else:
        kw = dict(per_message=a_msg + a_chunk)
    clocks, hops = replay(progs, link, per_byte=b, **kw)
    sent = max(sum(op[2] for op in p if op[0] == "send") for p in progs)
    return c0 + max(clocks), max(hops), sent


def _check_ring_replay() -> None:
    """The vectorised ring equals the generic replay (uneven blocks, every link)."""
    for k in (3, 7, 16):
        blocks = [100 * (i % 3) + 7 for i in range(k)]
        kb = [("rs", blocks), ("ag", blocks[::-1])]
        for link in PROFILES:
            clocks, _ = replay(_program("ring", kb, k), link, per_message=1e-4, per_byte=1e-9)
            fast = ring_replay(k, kb, link, 1e-4, 1e-9)
            assert abs(fast - max(clocks)) <= 1e-9 * max(1.0, fast), (k, link, fast, clocks)


def fit_compute(samples: list[tuple[int, int, int, float]]) -> tuple[float, ...]:
    """Least squares ``compute = c0 + a * messages + c * chunks + b * bytes`` (sent plus
    received per peer) with every coefficient >= 0 (a negative one is dropped, then refit)."""
    x = np.array([[1.0, m, c, by] for m, c, by, _ in samples])
    y = np.array([t for *_, t in samples])
    active = [0, 1, 2, 3]
    coef = np.zeros(4)
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active = [a for a, c in zip(active, sol) if c >= 0] if (sol >= 0).any() else []
    return tuple(float(c) for c in coef)


def run_plain(ks, max_threaded, cpu_ks, cpu_topos, rows, plot, alone):
    """Threaded runs for K <= ``max_threaded`` on every link and for K in ``cpu_ks`` (only
    ``cpu_topos``) on the internet profile (per-peer CPU does not depend on the link); the rest
    modeled. ``alone[(K, name)]``: CPU ms of peers 0, K/2, K-1 run alone (``peer_cpu``)."""
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2**16, size=N_VALUES, dtype=np.uint32)
    samples: list[tuple[int, int, float]] = []
    sims = {}
    for k in sorted({k for k in ks if k <= max_threaded} | set(cpu_ks)):
        links = list(PROFILES) if k <= max_threaded else ["internet"]
        for name, topo in TOPOS.items():
            if k > max_threaded and name not in cpu_topos:
                continue
            t0 = time.perf_counter()
            ranks = sorted({0, k // 2, k - 1})
            fn = lambda t, topo=topo: plain_round(t, values, topo)  # noqa: E731
            alone[(k, name)] = [v * 1e3 for v in peer_cpu(k, fn, ranks, reps=3).values()]
            for link in links:
                res = simulate(k, lambda t, topo=topo: plain_round(t, values, topo), link)
                for out in res.results:
                    np.testing.assert_array_equal(out, values * np.uint32(k))
                res.results = []  # K arrays of 4 MiB per run: keep only the numbers
                sims[(k, name, link)] = res
            if k >= 256:
                print(f"  threaded K={k} {name}: {time.perf_counter() - t0:.0f} s", flush=True)
            if name.startswith("halving") and k & (k - 1):
                continue  # fold-in: sent and received differ per peer; the rest fit the model
            for r in range(k):
                by = res.bytes_sent[r] + res.bytes_received[r]
                chunks = 4 * (k - 1)  # two collectives, K - 1 chunks each way
                samples.append((2 * res.messages[r], chunks, by, res.compute[r]))
    fit = fit_compute(samples)
    print(
        f"compute fit (plain): c0={fit[0] * 1e3:.2f} ms + {fit[1] * 1e6:.1f} us/message + "
        f"{fit[2] * 1e6:.1f} us/chunk + {fit[3] * 1e9:.3f} ns/byte, "
        f"from {len(samples)} peer-rounds",
        flush=True,
    )
    for k in sorted(set(ks) | set(cpu_ks)):
        blocks = [4 * len(c) for c in np.array_split(np.arange(N_VALUES), k)]
        kb = [("rs", blocks), ("ag", blocks)]
        for name in TOPOS:
            for link in PROFILES:
                t0 = time.perf_counter()
                model_t, steps, sent = modeled(name, k, kb, link, fit)
                src, per_peer_cpu = "modeled", None
                res = sims.get((k, name, link))
                if res is not None:
                    src = f"simulated (model {model_t:.3f} s)"
                    model_t, steps = res.round_time, res.steps
                    sent, per_peer_cpu = max(res.bytes_sent), float(np.mean(res.compute))
                cpu = f"{per_peer_cpu * 1e3:.1f}" if per_peer_cpu is not None else "-"
                rows.append(
                    [
                        "plain",
                        "-",
                        str(k),
                        name,
                        link,
                        str(steps),
                        f"{sent / 2**20:.2f}",
                        cpu,
                        f"{model_t:.3f}",
                        src,
                    ]
                )
                plot.setdefault(("plain", name, link), []).append((k, model_t))
                if time.perf_counter() - t0 > 5:
                    print(f"  (K={k} {name} {link}: {time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"plain K={k} done", flush=True)
    return sims


def cpu_table(sims, alone) -> list[list[str]]:
    """Per-peer CPU ms per round of ``all_reduce_array``: in the K-thread simulation (mean over
    peers, blocked waits left out) and alone (``peer_cpu``: peers 0, K/2, K-1 each run alone on
    their recorded messages, median of 3, then the mean of the three), the latter per MiB the
    peer moved (sent + received), and its ratio to the smallest K."""
    out = []
    for name in TOPOS:
        pts = sorted((k, r) for (k, n, link), r in sims.items() if n == name and link == "internet")
        if not pts:
            continue
        base = float(np.mean(alone[(pts[0][0], name)]))
        for k, res in pts:
            solo = float(np.mean(alone[(k, name)]))
            moved = (res.bytes_sent[0] + res.bytes_received[0]) / 2**20
            out.append(
                [
                    name,
                    str(k),
                    str(max(res.messages)),
                    f"{moved:.2f}",
                    f"{np.mean(res.compute) * 1e3:.1f}",
                    f"{solo:.2f}",
                    f"{solo / moved:.2f}",
                    f"{solo / base:.2f}",
                ]
            )
    return out


def encrypted_sizes(k: int) -> tuple[int, int, dict[str, float]]:
    """(ciphertexts per round, N, wire bytes per coefficient position of each collective),
    from the plan: c0 and shares at the plan's compressed width, c1 residues bit-packed at
    the moduli's widths, the opened sums at the sub-slot width (the real round's wire)."""
    from gpubfv import Parameters
    from gpubfv.mhe import choose_parameters_for_updates

    plan = choose_parameters_for_updates(
        k, 16, values_per_round=N_VALUES, rounds=1000, notion="statistical", lam=40
    )
    params = Parameters(plan.literal)
    q_bits = sum(q.bit_length() for q in params.q[: plan.level])
    bits = plan.compressed_bits
    per_position = {
        "ct": (bits + q_bits) / 8,
        "c1": q_bits / 8,
        "share": bits / 8,
        "plain": plan.pack * plan.width / 8,
    }
    return math.ceil(N_VALUES / (params.n * plan.pack)), params.n, per_position


def encrypted_blocks(k: int, lay: str) -> tuple[int, list[tuple[str, list[int]]]]:
    """(ciphertexts, the four collectives' K chunk sizes in bytes) for a chunk layout:
    ``slices`` (the aggregator's: P = ciphertexts x N positions cut evenly, a share chunk with
    one header position on top) or ``whole`` (whole ciphertexts spread over the K indices,
    the threshold round's ``_chunk_sizes``)."""
    from dmhe.recordbuffer import even_offsets

    count, n, per = encrypted_sizes(k)
    if lay == "slices":
        units = [int(u) for u in np.diff(even_offsets(count * n, k))]
        heads = [u + 1 for u in units]
    else:
        units = [c * n for c in layout(count, k, True)]
        heads = units
    return count, [
        ("rs", _blocks(per["ct"], units)),
        ("ag", _blocks(per["c1"], units)),
        ("rs", _blocks(per["share"], heads)),
        ("ag", _blocks(per["plain"], units)),
    ]


def layout(count: int, k: int, spread: bool) -> list[int]:
    """Ciphertexts per chunk: ``front`` as ``np.array_split``, ``spread`` evenly over K."""
    if not spread:
        return [len(c) for c in np.array_split(np.arange(count), k)]
    return [(i + 1) * count // k - i * count // k for i in range(k)]


def sent_per_peer(name: str, k: int, kinds_blocks) -> np.ndarray:
    """Bytes each peer sends in the collectives ``kinds_blocks`` (the ring in closed form:
    a reduce-scatter sends all chunks but the one kept, an all-gather all but the one received
    last)."""
    if name == "ring":
        sent = np.zeros(k)
        for kind, blocks in kinds_blocks:
            arr = np.asarray(blocks, dtype=np.float64)
            sent += arr.sum() - arr[(np.arange(k) + (1 if kind == "rs" else 2)) % k]
        return sent
    progs = _program(name.removesuffix("-batched"), kinds_blocks, k)
    extra = (lambda op: 4 * (op[3] + 1)) if name.endswith("-batched") else (lambda op: 0)
    return np.array([sum(op[2] + extra(op) for op in p if op[0] == "send") for p in progs])


def encrypted_bytes(ks) -> None:
    """Max and mean bytes sent per peer of the encrypted round, per layout and topology,
    against the ring's: the mean is the ring's, the max is what a peer's link must carry."""
    print("\nEncrypted round, MiB sent per peer (max / mean over peers; ratio to the ring):")
    for k in ks:
        for lay in ("slices", "whole"):
            count, kb = encrypted_blocks(k, lay)
            ring = sent_per_peer("ring", k, kb)
            for name in TOPOS:
                sent = ring if name == "ring" else sent_per_peer(name, k, kb)
                print(
                    f"- K={k} ({count} ct, {lay}) {name}: max {sent.max() / 2**20:.2f} "
                    f"({sent.max() / ring.max():.3f}x), mean {sent.mean() / 2**20:.3f} "
                    f"({sent.mean() / ring.mean():.4f}x)",
                    flush=True,
                )


def run_encrypted(ks, rows, plot):
    for k in ks:
        for lay in ("slices", "whole"):
            count, kb = encrypted_blocks(k, lay)
            for name in TOPOS:
                for link in PROFILES:
                    model_t, steps, sent = modeled(name, k, kb, link)
                    rows.append(
                        [
                            f"encrypted ({count} ct)",
                            lay,
                            str(k),
                            name,
                            link,
                            str(steps),
                            f"{sent / 2**20:.2f}",
                            "-",
                            f"{model_t:.3f}",
                            "modeled, net only",
                        ]
                    )
                    plot.setdefault((f"encrypted-{lay}", name, link), []).append((k, model_t))
        print(f"encrypted K={k} done", flush=True)


def check_targets(rows) -> None:
    """The issue's targets that the table decides: steps, the K = 1,000 internet round, bytes."""
    print("\nTargets:")
    # the encrypted targets are the aggregator's layout (slices); "whole" is for comparison
    by = {(r[0].split(" ")[0], r[2], r[3], r[4]): r for r in rows if r[1] in ("-", "slices")}
    for wl, passes in (("encrypted", 4), ("plain", 2)):
        for k in ("1000", "10000"):
            bound = passes * math.ceil(math.log2(int(k))) + passes
            for name in TOPOS:
                r = by.get((wl, k, name, "internet"))
                if r is None or name == "ring":
                    continue
                ok = int(r[5]) <= bound
                print(
                    f"- {wl} K={k} {name}: {r[5]} steps (bound {passes}*ceil(log2 K)+{passes} = "
                    f"{bound}: {'met' if ok else 'NOT met'}); internet round {r[8]} s"
                    + (
                        f" ({'met' if float(r[8]) <= 5 else 'NOT met'}: <= 5 s)"
                        if k == "1000"
                        else ""
                    )
                )
    worst: dict[tuple[str, str], tuple[float, str]] = {}
    for (wl, k, name, link), r in by.items():
        ring = by.get((wl, k, "ring", link))
        if ring is None or name == "ring" or link != "internet":
            continue
        ratio = float(r[6]) / max(float(ring[6]), 1e-12)
        if ratio > worst.get((wl, name), (0.0, ""))[0]:
            worst[(wl, name)] = (ratio, k)
    for (wl, name), (ratio, k) in sorted(worst.items()):
        print(f"- bytes sent per peer, {wl} {name} vs ring: at most {ratio:.3f}x (K={k})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="*", default=KS)
    ap.add_argument("--max-threaded", type=int, default=64, help="largest K run as threads")
    ap.add_argument("--plot", type=Path, default=Path(__file__).with_name("scale_round_time.png"))
    ap.add_argument("--skip-encrypted", action="store_true")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--save", type=Path, help="write the rows and plot points here (JSON)")
    ap.add_argument("--load", type=Path, nargs="*", default=[], help="start from saved parts")
    ap.add_argument(
        "--cpu-ks", type=int, nargs="*", default=[], help="also run these K as threads (internet)"
    )
    ap.add_argument(
        "--cpu-topologies",
        nargs="*",
        default=["halving-batched", "bruck-batched"],
        help="the topologies run as threads at --cpu-ks",
    )
    ap.add_argument(
        "--bytes-only", action="store_true", help="only the encrypted max/mean bytes per peer"
    )
    args = ap.parse_args(argv)
    print("\n".join(machine_lines()))
    if args.bytes_only:
        encrypted_bytes(args.ks)
        return 0
    for k in (4, 1000, 10_000):
        print(
            f"- steps per collective K={k}: "
            + ", ".join(f"{n} {collective_steps(n, k)}" for n in TOPOS)
        )
    _check_ring_replay()
    rows: list[list[str]] = []
    plot: dict = {}
    header = [
        "workload",
        "layout",
        "K",
        "topology",
        "link",
        "steps",
        "MiB sent/peer",
        "CPU ms/peer",
        "round s",
        "source",
    ]
    for path in args.load:  # earlier parts (--save), e.g. plain and encrypted run side by side
        part = json.loads(Path(path).read_text())
        rows += part["rows"]
        for key, pts in part["plot"]:
            plot.setdefault(tuple(key), []).extend(tuple(p) for p in pts)
    if not args.skip_plain:
        alone: dict = {}
        sims = run_plain(
            args.ks, args.max_threaded, args.cpu_ks, args.cpu_topologies, rows, plot, alone
        )
        print(markdown_table(header, [r for r in rows if r[0] == "plain"]), flush=True)
        print("\nPer-peer CPU per round (plain, 2^20 uint32 values = 4 MiB):")
        cpu_header = [
            "topology",
            "K",
            "messages sent/peer",
            "MiB moved by peer 0",
            "CPU ms in simulation",
            "CPU ms alone",
            "alone ms/MiB moved",
            "alone vs smallest K",
        ]
        print(markdown_table(cpu_header, cpu_table(sims, alone)), flush=True)
    if not args.skip_encrypted:
        run_encrypted(args.ks, rows, plot)
        print(markdown_table(header, [r for r in rows if r[0] != "plain"]), flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps({"rows": rows, "plot": list(plot.items())}))
    check_targets(rows)
    for pts in plot.values():
        pts.sort()
    make_plot(plot, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
