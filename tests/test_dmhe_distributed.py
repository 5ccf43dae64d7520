"""A 3-process torch.distributed (gloo, localhost) run equals the in-process run."""

from __future__ import annotations

import socket

import numpy as np
import torch.multiprocessing as mp

from dmhe.aggregation import PlaintextAggregator
from dmhe.transport import run_peers

K, N = 3, 1001


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [rng.integers(-(2**50), 2**50, size=N, dtype=np.int64) for _ in range(K)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from dmhe.transport import TorchDistributedTransport

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=K)
    try:
        t = TorchDistributedTransport()
        agg = PlaintextAggregator(K)
        agg.setup(t)
        out = agg.allreduce_sum(t, _inputs()[rank])
        t.barrier()
        np.save(f"{out_dir}/rank{rank}.npy", out)
        np.save(f"{out_dir}/bytes{rank}.npy", np.array([t.total_bytes_sent]))
    finally:
        dist.destroy_process_group()


def test_gloo_three_processes_equal_in_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=K, join=True)
    xs = _inputs()
    local = run_peers(
        K, lambda t: (PlaintextAggregator(K).allreduce_sum(t, xs[t.rank]), t.total_bytes_sent)
    )
    for r, (out, in_process_bytes) in enumerate(local):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{r}.npy"), out)
        # Same payload bytes plus one 8-byte length header per message (2(K-1) messages).
        sent = int(np.load(tmp_path / f"bytes{r}.npy")[0])
        assert sent == in_process_bytes + 8 * 2 * (K - 1)
    np.testing.assert_array_equal(local[0][0], np.sum(xs, axis=0))
