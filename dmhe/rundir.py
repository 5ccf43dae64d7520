"""The run directory: settings, metrics, checkpoints, a lock, and per-peer folders.

Layout (``rank`` is the process's peer under ``torchrun``; an in-process run has none)::

    run.json          settings and set-up facts (rank 0 only)
    metrics.jsonl     one fsync'd line per round (rank 0 only)
    run.lock          flock'd for the whole run; holds the pid of the run that holds it
    checkpoint.pt     in-process runs: the one model of all K simulated peers
    rank-N.log        routine output of process peer N > 0 (see dmhe.launch)
    rank-N/           process peer N's own material, owner-only (0700): its checkpoint.pt and
                      the one before (checkpoint.prev.pt: a restart resumes from the newest round
                      every peer holds, see dmhe.restart), its run.lock, and whatever key
                      material the aggregator persists there

Every write is atomic (temporary file, fsync, rename) or an fsync'd append, so a run killed at
any point leaves a consistent directory to resume from. A checkpoint carries a BLAKE2b digest of
its tensors, round and config (:func:`dmhe.state.payload_digest`); :meth:`RunDir.load_checkpoint`
refuses a corrupt, truncated, tampered or out-of-range one with a :class:`ConfigError` and
changes nothing on disk. Locks are ``fcntl.flock`` locks: they vanish with the process that
holds them (kill -9 included), and they are only as reliable as the file system's flock (local
disks yes; some network file systems no).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from dmhe.config import ConfigError, TrainConfig
from dmhe.state import payload_digest

__all__ = [
    "CHECKPOINT",
    "LOCK",
    "METRICS",
    "PREVIOUS",
    "RUN_INFO",
    "RunDir",
    "atomic_write_bytes",
    "checkpoint_payload",
    "run_info",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
METRICS = "metrics.jsonl"
RUN_INFO = "run.json"
LOCK = "run.lock"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once (readers see the old or the new file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """One run's folder, seen from one process.

    ``rank``: None for an in-process run (checkpoint at the top); the peer's rank when each peer
    is a process, whose checkpoint then lives in :meth:`rank_dir`. Only the writer (``writer``;
    default: rank 0, or the in-process run) writes ``run.json`` and ``metrics.jsonl``.
    """

    def __init__(
        self, path: str | Path, *, rank: int | None = None, writer: bool | None = None
    ) -> None:
        if rank is not None and (not isinstance(rank, int) or rank < 0):
            raise ValueError(f"rank must be a non-negative int or None, got {rank!r}")
        self.path = Path(path)
        self.rank = rank
        self.writer = rank in (None, 0) if writer is None else writer
        self._locks: list[IO[str]] = []

    # ------------------------------------------------------------------ folders and the lock

    def rank_dir(self, rank: int) -> Path:
        """``rank-N/``, created owner-only (0700): peer N's checkpoint and key material."""
        d = self.path / f"rank-{rank}"
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask, and exist_ok keeps old modes
        return d

    @property
    def checkpoint_dir(self) -> Path:
        """Where this process's checkpoint lives."""
        return self.path if self.rank is None else self.rank_dir(self.rank)

    @property
    def checkpoint_path(self) -> Path:
        """This process's checkpoint file."""
        return self.checkpoint_dir / CHECKPOINT

    def open(self, *, resume: bool) -> None:
        """Create the folder and take its lock(s) for this process; a fresh run refuses a folder
        that already holds a checkpoint or metrics. Raises :class:`ConfigError` (nothing
        written) when another live run holds a lock, naming its pid."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.writer:
            self._lock(self.path / LOCK)
        if self.rank is not None:
            self._lock(self.rank_dir(self.rank) / LOCK)
        metrics = self.path / METRICS
        logged = self.writer and metrics.exists() and metrics.stat().st_size > 0
        if not resume and (self.has_checkpoint() or logged):
            self.close()
            raise ConfigError(
                f"{self.path} already holds a run; pass resume or choose another out_dir"
            )

    def _lock(self, path: Path) -> None:
        f = open(path, "a+")  # noqa: SIM115 - held open for the whole run: the lock is the fd
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown pid"
            f.close()
            self.close()
            raise ConfigError(
                f"{self.path} is in use by another run ({holder}); wait for it to finish or "
                "choose another out_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._locks.append(f)

    def close(self) -> None:
        """Release this process's locks (also released when the process dies)."""
        for f in self._locks:
            f.close()
        self._locks.clear()

    @property
    def locked(self) -> bool:
        """Whether this process holds the folder's lock(s)."""
        return bool(self._locks)

    # ------------------------------------------------------------------ settings and metrics

    def has_checkpoint(self) -> bool:
        """Whether this process's checkpoint exists."""
        return self.checkpoint_path.exists()

    def write_info(self, info: dict[str, Any]) -> None:
        """``run.json``: the settings and set-up facts of the run."""
        atomic_write_bytes(self.path / RUN_INFO, json.dumps(info, indent=2).encode())

    def append_metrics(self, metrics: dict[str, Any]) -> None:
        """One fsync'd line of ``metrics.jsonl``."""
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(metrics) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_round: int) -> None:
        """Drop metric lines after ``last_round`` (logged after the last checkpoint). Every line
        is checked before anything is written: an unreadable line other than a torn last one
        (killed mid-append) raises :class:`ConfigError` and leaves the file as it was."""
        metrics = self.path / METRICS
        if not metrics.exists():
            return
        text = metrics.read_text()
        lines = text.split("\n")
        torn = lines.pop()  # "" after a final newline; else a line cut short by a kill
        kept = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rnd = json.loads(line)["round"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{metrics}: line {i} is not a metrics record") from None
            if not isinstance(rnd, int) or isinstance(rnd, bool):
                raise ConfigError(f"{metrics}: line {i} has round {rnd!r}")
            if rnd <= last_round:
                kept.append(line)
        new = "".join(ln + "\n" for ln in kept)
        if new != text or torn:
            atomic_write_bytes(metrics, new.encode())

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        """Atomically replace this process's checkpoint by ``payload`` (``torch.save``-able:
        ``round``, ``config`` and tensors) and its digest; a process peer keeps the one it
        replaces as ``checkpoint.prev.pt``."""
        if "digest" in payload:
            raise ValueError("payload key 'digest' is reserved")
        buf = io.BytesIO()
        torch.save({**payload, "digest": payload_digest(payload)}, buf)
        if self.rank is not None and self.checkpoint_path.exists():
            os.replace(self.checkpoint_path, self.checkpoint_dir / PREVIOUS)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def checkpoints(self, map_location: Any) -> list[dict[str, Any]]:
        """Every verified checkpoint this process holds, newest first (the newest and, for a
        process peer, the previous one); :class:`ConfigError` if one is damaged."""
        found = [self._load(self.checkpoint_dir / n, map_location) for n in (CHECKPOINT, PREVIOUS)]
        return sorted((c for c in found if c is not None), key=lambda c: -int(c["round"]))

    def load_checkpoint(
        self, map_location: Any, *, max_round: int | None = None, round: int | None = None
    ) -> dict[str, Any] | None:
        """The verified checkpoint (tensors only: ``weights_only``), or None when there is none;
        ``round``: the one of that round (the newest or the previous; :class:`ConfigError`
        when neither).

        Raises :class:`ConfigError` when it cannot be read (truncated, corrupt), when its digest
        is missing or does not match (a flipped byte, an edit), or when its ``round`` is not an
        int in ``[0, rounds]`` (its own config's rounds, and ``max_round`` if given).
        """
        if round is None:
            return self._load(self.checkpoint_path, map_location, max_round)
        for name in (CHECKPOINT, PREVIOUS):
            ckpt = self._load(self.checkpoint_dir / name, map_location, max_round)
            if ckpt is not None and ckpt["round"] == round:
                return ckpt
        raise ConfigError(f"{self.checkpoint_dir} holds no checkpoint of round {round}")

    def _load(
        self, path: Path, map_location: Any, max_round: int | None = None
    ) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged zip or pickle
            raise ConfigError(
                f"checkpoint {path} is unreadable (corrupt or truncated): {exc}"
            ) from None
        if not isinstance(ckpt, dict) or not {"digest", "round", "config"} <= set(ckpt):
            raise ConfigError(f"checkpoint {path} lacks its digest, round or config")
        digest = ckpt.pop("digest")
        if digest != payload_digest(ckpt):
            raise ConfigError(f"checkpoint {path} does not match its digest (corrupt or edited)")
        rnd = ckpt["round"]
        saved_rounds = ckpt["config"].get("rounds") if isinstance(ckpt["config"], dict) else None
        limits = [r for r in (saved_rounds, max_round) if isinstance(r, int)]
        if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0 or not limits:
            raise ConfigError(f"checkpoint {path}: invalid round {rnd!r}")
        if rnd > min(limits):
            raise ConfigError(
                f"checkpoint {path} is at round {rnd}, beyond the run's {min(limits)} rounds"
            )
        return ckpt

    def resume_into(
        self, model: nn.Module, config: TrainConfig, map_location: Any, round: int | None = None
    ) -> int | None:
        """Load the verified checkpoint's model (of ``round`` if given) into ``model``; returns
        its round, None when there is no checkpoint. :class:`ConfigError` when ``config`` may
        not resume it (see :meth:`TrainConfig.resume_conflicts`) or its model does not fit;
        ``model`` is left as it was then."""
        ckpt = self.load_checkpoint(map_location, max_round=config.rounds, round=round)
        if ckpt is None:
            return None
        changed = config.resume_conflicts(ckpt["config"])
        if changed:
            raise ConfigError(f"cannot resume: config differs in {changed}")
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot resume: the checkpoint's model does not fit: {exc}") from exc
        return int(ckpt["round"])


def run_info(trainer: Any) -> dict[str, Any]:
    """``run.json`` of a :class:`~dmhe.trainer.Trainer`: its settings and set-up facts."""
    agg0 = trainer.aggregators[trainer.local_peers[0]]
    cfg = trainer.config
    return {
        "config": cfg.to_dict(),
        "num_values": trainer.num_values,
        "aggregator": trainer.agg_name,
        "modulus": str(agg0.modulus),
        "sum_bound": trainer.sum_bound,
        "dp_sigma": trainer.sigma,
        "security": agg0.security(),
        "privacy": trainer.pipeline.privacy_report(cfg.dp_delta, cfg.rounds, cfg.threshold),
        "torch": torch.__version__,
        **trainer.setup_info,
    }


def checkpoint_payload(trainer: Any) -> dict[str, Any]:
    """A :class:`~dmhe.trainer.Trainer`'s checkpoint: the round, the config, the model and,
    across processes, the original peers live now (a restart takes over only those)."""
    payload = {"round": trainer.round, "config": trainer.config.to_dict()}
    payload["model"] = trainer.model.state_dict()
    if trainer.network is None:
        payload["members"] = list(trainer.transports[0].reachable_peers())
    return payload
