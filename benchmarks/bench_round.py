"""Round traffic (issue 10): MEASURED bytes each peer sends in one aggregation round.

K in-process peers (`dmhe.transport.run_peers`) aggregate 2^20 signed 16-bit values once; bytes
are the transport's own counters (`Transport.total_bytes_sent`), read between the steps of
`EncryptedAggregator`'s round so the split per pass is measured too, set-up excluded. The keys
are planned for a 1,000-round run (decryption budget D = 1000 x ciphertexts per round), with
statistical smudging at lambda = 40 and, beside it, the opt-in renyi notion. Baselines in the
same harness: a float32 ring all-reduce, the quantized plaintext ring at the sub-slot width
(b + ceil(log2 K) bits per value, the floor of a ring of quantized values), the int64 ring of
dmhe's plaintext-quantized mode, and pairwise masking (secagg; measured up to K = 64, by
formula above). The planner's prediction (`plan.round_bytes_per_value`) is shown beside.

Usage: python benchmarks/bench_round.py [--peers 4 16 64 256] [--values 1048576] [--no-write]
Writes the `bench_round` section of benchmarks/RESULTS.md ("Round traffic (issue 10)").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_lines, markdown_table, write_section  # noqa: E402

from dmhe.aggregators.encrypted import EncryptedAggregator  # noqa: E402
from dmhe.aggregators.encrypted_slices import SliceRound  # noqa: E402
from dmhe.aggregators.secagg import PairwiseMaskAggregator  # noqa: E402
from dmhe.collectives import Codec, all_reduce, all_reduce_array, split_chunks  # noqa: E402
from dmhe.transport import run_peers  # noqa: E402
from gpubfv.mhe.planner import project_round  # noqa: E402
from gpubfv.serialization import pack_bits, unpack_bits  # noqa: E402

SECTION = "bench_round"
VALUE_BITS = 16
ROUNDS = 1000
SECAGG_MEASURE_MAX_K = 64
TARGETS = {("statistical", 4): 13.0, ("statistical", 16): 15.0, ("statistical", 256): 20.0}
TARGETS[("renyi", 16)] = 13.5
# K peers are threads of one process: at most this many encrypt or make shares at once, so
# that K = 256 fits in memory (the bytes do not depend on it)
HEAVY = threading.BoundedSemaphore(4)


def _values(n: int, rank: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + rank)  # test data, not secrets
    half = 1 << (VALUE_BITS - 1)
    return rng.integers(-half + 1, half, size=n, dtype=np.int64)  # |v| <= the offset


def encrypted(k: int, n: int, notion: str) -> dict:
    """One encrypted round; bytes per pass from the transport counters between the steps."""
    opts = dict(value_bits=VALUE_BITS, smudging=notion, rounds=ROUNDS, values=n, topology="ring")
    aggs = [EncryptedAggregator(k, **opts) for _ in range(k)]
    want = sum(_values(n, r) for r in range(k))

    def peer(t):
        agg = aggs[t.rank]
        agg.setup(t)
        t.barrier()
        values = _values(n, t.rank)
        marks = [t.total_bytes_sent]
        r = SliceRound(agg, t, sum(agg._chunk_sizes(n)))
        with HEAVY:
            buf = r.encrypt(agg._validated(values))
        own = r.reduce_ciphertexts(buf)
        mine = buf.chunk(own)
        marks.append(t.total_bytes_sent)
        c1 = r.gather_c1(mine, own)
        marks.append(t.total_bytes_sent)
        with HEAVY:
            words, digest = r.share(c1)
        del c1
        summed = r.reduce_shares(words, digest, own)
        marks.append(t.total_bytes_sent)
        total = r.gather_plain(r.open(mine, summed), own)[:n]
        marks.append(t.total_bytes_sent)
        total -= np.int64(k * agg.offset)
        assert agg._journal is not None
        agg._journal.release()
        return np.diff(marks), bool(np.array_equal(total, want))

    t0 = time.perf_counter()
    res = run_peers(k, peer)
    per_pass = np.mean([r[0] for r in res], axis=0) / n
    plan = aggs[0].plan
    return {
        "what": f"encrypted ({notion})",
        "k": k,
        "bpv": float(per_pass.sum()),
        "split": [float(x) for x in per_pass],
        "max_bpv": float(max(r[0].sum() for r in res)) / n,
        "predicted": plan.round_bytes_per_value(n),
        "plan": plan.describe(),
        "exact": all(r[1] for r in res),
        "wall_s": time.perf_counter() - t0,
        "measured": True,
    }


def _ring(k: int, n: int, what: str, run) -> dict:
    def peer(t):
        start = t.total_bytes_sent
        ok = run(t)
        return t.total_bytes_sent - start, ok

    res = run_peers(k, peer)
    return {
        "what": what,
        "k": k,
        "bpv": float(np.mean([r[0] for r in res])) / n,
        "measured": True,
        "exact": all(r[1] for r in res),
    }


def float32_ring(k: int, n: int) -> dict:
    """The fp32 all-reduce users compare with (ring)."""

    def run(t) -> bool:
        x = _values(n, t.rank).astype(np.float32)
        return all_reduce_array(t, x).size == n

    return _ring(k, n, "float32 ring all-reduce", run)


def int64_ring(k: int, n: int) -> dict:
    """dmhe's plaintext-quantized mode: the int64 ring of the quantized values."""
    want = sum(_values(n, r) for r in range(k))

    def run(t) -> bool:
        return bool(np.array_equal(all_reduce_array(t, _values(n, t.rank)), want))

    return _ring(k, n, "plaintext int64 ring", run)


def packed_ring(k: int, n: int) -> dict:
    """Quantized values offset to unsigned and bit-packed at b + ceil(log2 K) bits."""
    width = VALUE_BITS + max(1, math.ceil(math.log2(k)))
    offset = np.int64(1 << (VALUE_BITS - 1))
    mask = np.uint64((1 << width) - 1)
    want = sum(_values(n, r) for r in range(k))

    def run(t) -> bool:
        chunks = [c.astype(np.uint64) for c in split_chunks(_values(n, t.rank) + offset, k)]
        lens = [c.size for c in chunks]
        codec: Codec[np.ndarray] = Codec(
            encode=lambda a: pack_bits(a.astype(np.uint32)[None], (width,)) if a.size else b"",
            decode=lambda b, i: (
                unpack_bits(b, (width,), lens[i])[0].astype(np.uint64)
                if lens[i]
                else np.zeros(0, np.uint64)
            ),
            combine=lambda a, b: (a + b) & mask,
        )
        out = np.concatenate(all_reduce(t, chunks, codec)).astype(np.int64) - k * offset
        return bool(np.array_equal(out, want))

    return _ring(k, n, f"quantized ring at {width} bits", run)


def secagg(k: int, n: int) -> dict:
    """Pairwise masking: key agreement each round + int64 ring of masked values."""
    if k > SECAGG_MEASURE_MAX_K:
        avg = 2 * (k - 1) / k * 8 * n + 32 * (k - 1)
        return {"what": "pairwise masking (secagg)", "k": k, "bpv": avg / n, "measured": False}
    aggs = [PairwiseMaskAggregator(k) for _ in range(k)]

    def peer(t):
        start = t.total_bytes_sent  # rekey_each_round: the round repeats set-up's agreement
        aggs[t.rank].setup(t)
        out = aggs[t.rank].allreduce_sum(t, _values(n, t.rank))
        return t.total_bytes_sent - start, out.size == n

    res = run_peers(k, peer)
    return {
        "what": "pairwise masking (secagg)",
        "k": k,
        "bpv": float(np.mean([r[0] for r in res])) / n,
        "measured": True,
        "exact": all(r[1] for r in res),
    }


def main() -> None:
    """Run the grid, print it, write the RESULTS.md section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, nargs="*", default=[4, 16, 64, 256])
    ap.add_argument("--values", type=int, default=1 << 20)
    ap.add_argument("--notions", nargs="+", default=["statistical", "renyi"])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--baselines", nargs="+", default=["float32", "packed", "int64", "secagg"])
    ap.add_argument(
        "--rows-json", type=Path, default=None,
        help="keep the measured rows here: earlier rows are kept, this run's appended",
    )  # fmt: skip
    args = ap.parse_args()
    n = args.values
    rows: list[dict] = []
    if args.rows_json is not None and args.rows_json.exists():
        rows = json.loads(args.rows_json.read_text())
    for k in args.peers:
        for notion in args.notions:
            row = encrypted(k, n, notion)
            rows.append(row)
            print(
                f"K={k} {notion}: {row['bpv']:.2f} B/value (predicted {row['predicted']:.2f}), "
                f"split {[round(x, 2) for x in row['split']]}, exact={row['exact']}, "
                f"{row['wall_s']:.0f} s; {row['plan']}",
                flush=True,
            )
        fns = {"float32": float32_ring, "packed": packed_ring, "int64": int64_ring}
        fns["secagg"] = secagg
        for name in args.baselines:
            rows.append(fns[name](k, n))
            print(f"K={k} {rows[-1]['what']}: {rows[-1]['bpv']:.2f} B/value", flush=True)
    if args.rows_json is not None:
        args.rows_json.write_text(json.dumps(rows, indent=1))
    rows.sort(key=lambda r: (r["k"], not r["what"].startswith("encrypted"), r["what"]))
    header = ["K", "what", "B/value/peer", "ct", "c1", "share", "plain", "planner", "target"]
    table = []
    for r in rows:
        notion = r["what"][len("encrypted (") : -1] if r["what"].startswith("encrypted") else ""
        target = TARGETS.get((notion, r["k"]))
        split = r.get("split") or [None] * 4
        table.append(
            [str(r["k"]), r["what"] + ("" if r["measured"] else " (formula)"), f"{r['bpv']:.2f}"]
            + [f"{x:.2f}" if x is not None else "" for x in split]
            + [
                f"{r['predicted']:.2f}" if "predicted" in r else "",
                f"<= {target}" if target else "",
            ]
        )
    plans = [f"- K={r['k']} {r['what']}: {r['plan']}" for r in rows if "plan" in r]
    wide = []
    for k in sorted({r["k"] for r in rows}):
        cells = []
        for notion in ("statistical", "renyi"):
            est = project_round(
                k, VALUE_BITS, values_per_round=n, rounds=ROUNDS, max_t_bits=256, notion=notion
            )
            cells.append(
                f"{notion} {est.round_bytes_per_value(n):.2f} (N=2^{est.log_n}, "
                f"{est.pack}x{est.width} bits, log2 Q'={sum(est.wire_q_bits)}, "
                f"c0/shares {est.compressed_bits} bits)"
            )
        wide.append(f"- K={k}: " + "; ".join(cells))
    body = "\n".join(
        ["## Round traffic (issue 10)", ""]
        + machine_lines()
        + [
            "",
            "Command: `python benchmarks/bench_round.py` (K = 4 16 64 256, both notions; "
            "`--rows-json` lets one K run apart). Bytes sent per peer in one aggregation round "
            f"of {n:,} signed "
            f"{VALUE_BITS}-bit values, MEASURED with the in-process transport's counters (mean "
            f"over peers, set-up excluded); keys planned for {ROUNDS} rounds (D = {ROUNDS} x "
            "ciphertexts per round), lambda = 40, ring topology. ct/c1/share/plain: the measured "
            "split per pass (compressed c0 + c1 reduce-scatter, c1 all-gather, compressed "
            "shares, plaintext all-gather); planner: `plan.round_bytes_per_value(values)`.",
            "",
            markdown_table(header, table),
            "",
            "Plans:",
            *plans,
            "",
            "Planner projection (analytic, NOT measured) once plaintext moduli up to 2^256 are "
            "merged (`gpubfv.mhe.planner.project_round(..., max_t_bits=256)`), B/value/peer:",
            *wide,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
