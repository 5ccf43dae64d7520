"""A 3-process torch.distributed (gloo, localhost) run equals the in-process run."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
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


# the encrypted twin (tests/test_dmhe_encrypted.py::test_gloo_three_processes_equal_in_process)
# runs the same transport, byte counts and in-process equality in the suite
@pytest.mark.slow
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


def _silent_peer_worker(rank: int, port: int, out_dir: str) -> None:
    """Rank 1 stops answering (alive, socket open); rank 0 and 2 must name it within the
    bound, and agree on the live set without it."""
    import json
    import time

    import torch.distributed as dist

    from dmhe.transport import PeerDropped, TorchDistributedTransport, WaitPolicy

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=K)
    t = TorchDistributedTransport(policy=WaitPolicy(fixed=1.5, setup=60.0))
    t.round_time(0.01)  # one measured round: the fixed 1.5 s bound applies
    if rank == 1:  # silent (alive, sockets open) until the others are done, at most 60 s
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            os.path.exists(f"{out_dir}/silent{r}.json") for r in (0, 2)
        ):
            time.sleep(0.05)
        os._exit(0)
    t0 = time.monotonic()
    try:
        t.recv((rank - 1) % K)  # rank 2 waits on rank 1, rank 0 on rank 2
        result = {"error": None}
    except PeerDropped as exc:
        result = {"rank": exc.rank, "seconds": time.monotonic() - t0, "message": str(exc)}
        result["live"] = t.recover(exc)
        peer = [p for p in result["live"] if p != rank][0]
        t.send(peer, bytes([rank]))
        result["echo"] = t.recv(peer)[0]
        t.close()
    with open(f"{out_dir}/silent{rank}.json", "w") as f:
        json.dump(result, f)
    os._exit(0)  # the original group holds a pair to a silent peer: no teardown


def test_a_silent_peer_is_named_within_the_bound_and_left_out(tmp_path):
    import json

    ctx = mp.start_processes(
        _silent_peer_worker, args=(_free_port(), str(tmp_path)), nprocs=K, join=False,
        start_method="spawn",
    )  # fmt: skip
    ctx.join(timeout=240)
    got = {r: json.loads((tmp_path / f"silent{r}.json").read_text()) for r in (0, 2)}
    # rank 2 waits on rank 1 (silent): named by its timeout; rank 0 waits on rank 2 (alive,
    # itself waiting) and learns of the loss from rank 2's report on the store
    for r in (0, 2):
        assert got[r]["rank"] == 1, got[r]
        assert got[r]["seconds"] < 1.5 + 10  # the bound, plus this machine's load
        assert got[r]["live"] == [0, 2]
    assert "no answer within 1.5 s" in got[2]["message"]
    # ... or, when this machine is slow, by its own bound, blaming the end of the wait chain
    msg0 = got[0]["message"]
    assert "reported by peer 2" in msg0 or ("peer 1 lost" in msg0 and "peer 2 waits" in msg0)
    assert got[0]["echo"] == 2 and got[2]["echo"] == 0
