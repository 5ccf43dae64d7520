"""The run directory: ``run.json`` (settings), ``metrics.jsonl`` (one line per round) and an
atomic ``checkpoint.pt``. Every write is atomic (temporary file, fsync, rename) or an fsync'd
append, so a run killed at any point leaves a consistent directory to resume from."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from dmhe.config import ConfigError

__all__ = ["CHECKPOINT", "METRICS", "RUN_INFO", "RunDir", "atomic_write_bytes"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_INFO = "run.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once (readers see the old or the new file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """One run's folder. Only the writer peer (rank 0) writes; every peer may read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def open(self, *, resume: bool) -> None:
        """Create the folder; a fresh run refuses a folder that already holds a run."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume and self.has_checkpoint():
            raise ConfigError(
                f"{self.path} already holds a run; pass resume or choose another out_dir"
            )

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint exists."""
        return (self.path / CHECKPOINT).exists()

    def write_info(self, info: dict[str, Any]) -> None:
        """``run.json``: the settings and set-up facts of the run."""
        atomic_write_bytes(self.path / RUN_INFO, json.dumps(info, indent=2).encode())

    def append_metrics(self, metrics: dict[str, Any]) -> None:
        """One fsync'd line of ``metrics.jsonl``."""
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(metrics) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        """Atomically replace the checkpoint by ``payload`` (``torch.save``-able)."""
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(self.path / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self, map_location: Any) -> dict[str, Any] | None:
        """The checkpoint (tensors only: ``weights_only``), or None when there is none."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return torch.load(path, map_location=map_location, weights_only=True)

    def truncate_metrics(self, last_round: int) -> None:
        """Drop metric lines after ``last_round`` (logged after the last checkpoint)."""
        metrics = self.path / METRICS
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] <= last_round]
            atomic_write_bytes(metrics, "".join(ln + "\n" for ln in kept).encode())
