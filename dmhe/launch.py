"""How a ``dmhe train`` process finds its peers: torchrun detection and the transport choice.

``torchrun`` starts one process per peer and tells each its place in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, plus the rendezvous address). Under torchrun:

- ``--transport auto`` (the default) means ``torch``: one peer per process over
  ``torch.distributed`` (gloo on CPU, NCCL on CUDA). ``--transport inprocess`` is refused: every
  process would simulate all K peers and all would write one run directory.
- the number of peers is ``WORLD_SIZE``; an explicit ``--peers`` that differs is refused.
- the process group is joined first, before any setting is checked, so that a process whose
  settings are refused can still tell the others (through the handshake, :mod:`dmhe.handshake`)
  instead of leaving them waiting for it.
- rank 0 alone draws progress and writes ``run.json`` and ``metrics.jsonl``; every other rank's
  routine output (warnings, one line per round) goes to ``run_dir/rank-N.log``. Errors still go
  to stderr on every rank.

Outside torchrun ``--transport torch`` is refused with the torchrun command to use instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmhe.config import ConfigError, TrainConfig

__all__ = [
    "TRANSPORTS",
    "add_fault_flags",
    "leave",
    "run_failed",
    "RoundProgress",
    "TorchrunEnv",
    "choose_transport",
    "close_torch_transport",
    "init_torch_transport",
    "peers_under_torchrun",
    "rank_output",
    "refuse",
    "refuse_bad_flags",
    "restart_identity",
    "torchrun_command",
    "torchrun_env",
]

TRANSPORTS = ("auto", "inprocess", "torch")
_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The launch variables of ``environ`` (default ``os.environ``): torchrun's, or a plain
    ``env://`` launch's (``RANK`` and ``WORLD_SIZE`` with ``MASTER_ADDR``/``MASTER_PORT``;
    ``LOCAL_RANK`` then defaults to ``RANK``, one machine). None when ``RANK`` or
    ``WORLD_SIZE`` is missing: this process was not launched as one peer of several."""
    env = os.environ if environ is None else environ
    if not all(v in env for v in _VARS[:2]):
        return None
    names = _VARS if "LOCAL_RANK" in env else _VARS[:2]
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            "torchrun variables are not integers: " + ", ".join(f"{v}={env[v]!r}" for v in names)
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent torchrun variables: RANK={rank} WORLD_SIZE={world}")
    return TorchrunEnv(rank, world, local)


def torchrun_command(argv: Sequence[str], peers: int) -> str:
    """The command that runs ``dmhe <argv>`` with one process per peer on this machine."""
    return f"torchrun --standalone --nproc_per_node {peers} -m dmhe {shlex.join(argv)}"


def choose_transport(
    requested: str, env: TorchrunEnv | None, *, argv: Sequence[str], peers: int
) -> str:
    """``"torch"`` or ``"inprocess"`` for the ``--transport`` flag; :class:`ConfigError` when
    the flag contradicts how the process was started."""
    if requested not in TRANSPORTS:
        raise ConfigError(f"unknown transport {requested!r}; choose from {', '.join(TRANSPORTS)}")
    if requested == "auto":
        return "inprocess" if env is None else "torch"
    if requested == "inprocess" and env is not None:
        raise ConfigError(
            f"--transport inprocess under torchrun (RANK={env.rank}, WORLD_SIZE="
            f"{env.world_size}): every process would simulate all peers and write the same run "
            "directory; use --transport auto (or torch)"
        )
    if requested == "torch" and env is None:
        raise ConfigError(
            "--transport torch runs one peer per process, launched by torchrun; run:\n  "
            + torchrun_command(argv, peers)
        )
    return requested


def peers_under_torchrun(env: TorchrunEnv, explicit: int | None, restart: Any = None) -> int:
    """The number of peers under torchrun: ``WORLD_SIZE``, or after a ``restart``
    (:class:`dmhe.restart.Restart`) the run's K; ``explicit`` (``--peers`` when the user gave
    it) must agree."""
    if restart is not None:
        if explicit is not None and explicit != restart.peers:
            raise ConfigError(
                f"--peers {explicit} but the run being resumed has {restart.peers} peers "
                f"({len(restart.members)} restarted): drop --peers or match it"
            )
        return int(restart.peers)
    if explicit is not None and explicit != env.world_size:
        raise ConfigError(
            f"--peers {explicit} but torchrun started WORLD_SIZE={env.world_size} processes "
            "(one per peer): drop --peers or match it"
        )
    return env.world_size


def init_torch_transport(
    env: TorchrunEnv, *, on_gpu: bool, policy: Any = None, setup_timeout: float = 300.0
) -> Any:
    """Join torchrun's process group (NCCL when ``on_gpu``, else gloo) and return this process's
    :class:`~dmhe.transport.TorchDistributedTransport` with the bounded waits of ``policy``
    (a :class:`~dmhe.transport.WaitPolicy`); joining itself waits at most ``setup_timeout``."""
    import datetime

    import torch
    import torch.distributed as dist

    from dmhe.transport import TorchDistributedTransport

    if not dist.is_initialized():
        if on_gpu:
            torch.cuda.set_device(env.local_rank)  # one GPU per local process
        timeout = datetime.timedelta(seconds=setup_timeout)
        store = attempt_store(env, timeout)
        joined = {} if store is None else {"store": store, "rank": env.rank}
        dist.init_process_group(
            backend="nccl" if on_gpu else "gloo",
            timeout=timeout,
            world_size=-1 if store is None else env.world_size,
            **joined,
        )
    return TorchDistributedTransport(policy=policy)


def attempt_store(env: TorchrunEnv, timeout: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Under torchrun's agent (``TORCHELASTIC_USE_AGENT_STORE``), the agent's store seen under
    a prefix of its own per restart attempt (``TORCHELASTIC_RESTART_COUNT``); None elsewhere
    (a plain ``env://`` launch: torch's own rendezvous). The agent keeps one store across the
    restarts of ``--max-restarts``, and with torch's default rendezvous the restarted workers
    met the previous attempt's keys: gloo's full-mesh connect read the dead workers' addresses
    and failed ("Connection refused"), so a torchrun restart could not run at all."""
    env_vars = os.environ if environ is None else environ
    if env_vars.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    import torch.distributed as dist

    attempt = env_vars.get("TORCHELASTIC_RESTART_COUNT", "0")
    agent = dist.TCPStore(
        env_vars["MASTER_ADDR"],
        int(env_vars["MASTER_PORT"]),
        env.world_size,
        is_master=False,
        timeout=timeout,
    )
    return dist.PrefixStore(f"dmhe-attempt/{attempt}", agent)


def restart_identity(transport: Any, out_dir: str | None, *, bound: float) -> Any:
    """For ``--resume`` into ``out_dir`` under torchrun: take over one original peer's identity
    (:mod:`dmhe.restart`; ``DMHE_PEER_ID`` names it) and make ``transport`` act as it; returns
    the :class:`~dmhe.restart.Restart`, or None (no ``out_dir``, nothing to resume)."""
    if out_dir is None:
        return None
    from torch.distributed import PrefixStore
    from torch.distributed import distributed_c10d as c10d

    from dmhe.restart import PEER_ID_VAR, claim_identity, held_identities

    held, error, wanted = {}, None, None
    try:
        raw = os.environ.get(PEER_ID_VAR)
        if raw is not None and not raw.strip().isdigit():
            raise ConfigError(f"{PEER_ID_VAR}={raw!r} is not a peer number")
        wanted = None if raw is None else int(raw)
        held = held_identities(out_dir)
    except ConfigError as exc:
        error = str(exc)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun keeps its store
    store = PrefixStore(f"dmhe-restart/{attempt}", c10d._get_default_store())
    plan = claim_identity(
        store, transport.rank, transport.world_size, held, wanted=wanted, error=error, bound=bound
    )
    if plan is not None:
        transport.adopt_identities(plan.peer, plan.peers, plan.launch_ranks)
    return plan


def close_torch_transport(transport: Any, *, clean: bool) -> None:
    """Leave the process group; ``clean``: complete pending sends and meet every live peer
    first (after a successful run) instead of leaving at once (after an error). After a
    survived loss the group holds closed pairs that gloo cannot tear down: it is left as is
    (the caller exits the process with ``os._exit``)."""
    import torch.distributed as dist

    if clean:
        transport.close()
    elif hasattr(transport, "depart"):
        transport.depart()  # the store's host leaves after the others
    if dist.is_initialized() and not getattr(transport, "lost_any", False):
        dist.destroy_process_group()


def refuse(transport: Any, exc: Exception) -> Exception:
    """A process that cannot start (``exc``) tells its peers through the handshake, so that every
    peer stops with the reason; returns the handshake's error (naming this rank) to raise."""
    from dmhe.dropouts import live_ring
    from dmhe.handshake import HandshakeError, agree

    try:  # over the live peers only, after a restart with fewer (dmhe.restart)
        agree(live_ring(transport), {}, error=str(exc))
    except HandshakeError as err:
        return err
    return exc  # unreachable: a reported error always fails the handshake


def refuse_bad_flags(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Under torchrun, a ``train`` process whose flags argparse refused (it printed why) still
    joins its peers and reports through the handshake, so that they stop too instead of
    waiting for it; elsewhere it does nothing. The process group's backend follows a
    ``--device`` flag if one can be read, as the peers' does."""
    env = torchrun_env(environ)
    if env is None or "train" not in argv:
        return
    device = "cpu"
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
        elif a.startswith("--device="):
            device = a.split("=", 1)[1]
    from gpubfv.backend import Backend  # the one place that knows device names

    try:
        on_gpu = Backend.device_kind(device) != "cpu"
    except ValueError:  # a bad --device may be what argparse refused
        on_gpu = False
    transport = init_torch_transport(env, on_gpu=on_gpu)
    try:
        refuse(transport, ConfigError("its command line was refused (see its stderr)"))
    finally:
        close_torch_transport(transport, clean=False)


@contextlib.contextmanager
def rank_output(
    out_dir: str | None, env: TorchrunEnv | None, restart: Any = None
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """For torchrun ranks > 0 with a run directory: stdout and warnings go to
    ``out_dir/rank-N.log`` while the block runs, and the yielded callable logs one line per
    round there. Elsewhere it changes nothing and yields None. After a ``restart``
    (:class:`dmhe.restart.Restart`) N is the original peer taken over, and the first of those
    (the writer) keeps stdout."""
    rank, first = (env.rank, 0) if env is not None else (0, 0)
    if restart is not None:
        rank, first = restart.peer, min(restart.members)
    if env is None or rank == first or not out_dir:
        yield None
        return
    path = Path(out_dir) / f"rank-{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as log_file:

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            log_file.write(warnings.formatwarning(message, category, filename, lineno, line))

        def log_round(metrics: dict[str, Any]) -> None:
            keys = ("round", "accuracy", "loss", "contributors", "retries", "bytes_sent_per_peer")
            log_file.write(json.dumps({k: metrics.get(k) for k in keys}) + "\n")

        old_show, old_stdout = warnings.showwarning, sys.stdout
        warnings.showwarning = show
        sys.stdout = log_file
        try:
            of = env.world_size if restart is None else restart.peers
            pid = os.getpid()
            log_file.write(f"dmhe rank {rank} of {of} (launch rank {env.rank}, pid {pid})\n")
            yield log_round
        finally:
            warnings.showwarning, sys.stdout = old_show, old_stdout


class RoundProgress:
    """The progress bar of a run (tqdm), drawn by one process only: ``enabled`` is False on
    torchrun ranks > 0 (and with ``--no-progress``), and then every call does nothing. Each
    round shows accuracy, contributors, retries and kB sent per peer."""

    def __init__(self, config: TrainConfig, initial: int, *, enabled: bool) -> None:
        self._bar: Any = None
        self._peers = config.peers
        if enabled:
            from tqdm import tqdm

            desc = f"{config.mode} K={config.peers}"
            self._bar = tqdm(total=config.rounds, initial=initial, desc=desc)

    def update(self, metrics: dict[str, Any]) -> None:
        """One round done."""
        if self._bar is None:
            return
        from dmhe.dropouts import progress_postfix

        self._bar.update(1)
        self._bar.set_postfix(progress_postfix(metrics, self._peers))

    def close(self) -> None:
        """End the bar."""
        if self._bar is not None:
            self._bar.close()


def add_fault_flags(t: argparse.ArgumentParser, d: Any) -> None:
    """Bounded waits across processes and the set-up part of the dropout simulation."""
    t.add_argument(
        "--peer-timeout",
        type=float,
        default=d.peer_timeout,
        metavar="SECONDS",
        help="wait this long for a peer before naming it lost (default: max(60 s, 4x the "
        "slowest round))",
    )
    t.add_argument(
        "--setup-timeout",
        type=float,
        default=d.setup_timeout,
        metavar="SECONDS",
        help="the same bound for the key set-up and the first round",
    )
    t.add_argument(
        "--setup-drop-prob",
        type=float,
        default=d.setup_drop_prob,
        help="simulated loss of a peer per set-up attempt (the set-up is retried)",
    )


def run_failed(exc: BaseException) -> int:
    """A lost peer or a failed collective: one line on stderr, exit 1 (no gloo traceback)."""
    print(f"dmhe: error: {exc}", file=sys.stderr)
    return 1


def leave(transport: Any, code: int) -> int:
    """``code``, or, after a lost peer across processes, leave the process at once: gloo's
    teardown of a group with closed pairs aborts (terminate) instead of returning."""
    if transport is not None and code and hasattr(transport, "depart"):
        transport.depart()  # the store's host leaves after the others (after a failure)
    if transport is not None and (code or transport.lost_any):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
