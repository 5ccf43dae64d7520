"""The ``dmhe`` logger: one-line messages with levels, progress-bar friendly, and warnings
routed through it (``dmhe: warning: ...`` instead of a ``UserWarning`` with a source line).

Library code logs to ``logging.getLogger("dmhe")`` (or a child) and configures nothing; the CLI
calls :func:`setup_logging` once. Importing this module imports neither torch nor gpubfv.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "LEVELS",
    "MetricsLog",
    "get_logger",
    "log_metrics_line",
    "run_estimate",
    "setup_logging",
]

LEVELS = ("debug", "info", "warning", "error")

_HANDLER_NAME = "dmhe-cli"


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``dmhe`` logger, or its child ``dmhe.<name>``."""
    return logging.getLogger("dmhe" if not name else f"dmhe.{name}")


class _Formatter(logging.Formatter):
    """``dmhe: message`` for info and below, ``dmhe: warning: message`` above; a rank prefix
    for peers other than 0."""

    def __init__(self, rank: int | None) -> None:
        super().__init__()
        self.prefix = "dmhe" if not rank else f"dmhe[rank {rank}]"

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"{self.prefix}: {record.levelname.lower()}: {msg}"
        return f"{self.prefix}: {msg}"


class _ProgressAwareHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes through ``tqdm.write`` when tqdm is there, so a line never cuts a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=self.stream)
            except ImportError:
                self.stream.write(msg + "\n")
            self.flush()
        except Exception:  # a logging failure must not stop training
            self.handleError(record)


def _warning_to_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    get_logger().warning("%s", message)


def setup_logging(
    level: str | int = "info", *, rank: int | None = None, stream: TextIO | None = None
) -> logging.Logger:
    """Configure the ``dmhe`` logger for a command-line run (idempotent): ``level`` one of
    :data:`LEVELS` (or a ``logging`` number), messages on ``stream`` (stderr by default), and
    Python warnings shown as one-line log messages. Returns the logger."""
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        level = getattr(logging, level.upper())
    logger = get_logger()
    for h in list(logger.handlers):
        if h.get_name() == _HANDLER_NAME:
            logger.removeHandler(h)
    handler = _ProgressAwareHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_Formatter(rank))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    warnings.showwarning = _warning_to_log
    return logger


def log_metrics_line(metrics: dict[str, Any]) -> str:
    """One round's metrics as a short human line."""
    line = (
        f"round {metrics['round']}: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}"
        f", {metrics['bytes_sent_per_peer'] / 1e6:.3f} MB sent per peer"
        f", {metrics['time']['round']:.2f} s"
    )
    if metrics.get("dp_epsilon") is not None:
        line += f", ε = {metrics['dp_epsilon']:.2f}"
    return line


def run_estimate(done: list[dict[str, Any]], rounds: int, setup: dict[str, Any]) -> str | None:
    """The run's time and traffic, extrapolated after its first round (``done`` holds the
    rounds so far), and once more after the second when the first was slowed by one-off costs
    (JIT compilation, caches); None otherwise."""
    if not done or len(done) > 2:
        return None
    last = done[-1]
    per_round = last["time"]["round"]
    if len(done) == 2 and done[0]["time"]["round"] < 1.5 * per_round:
        return None  # the first estimate stands
    seconds = setup.get("setup_seconds", 0.0) + sum(m["time"]["round"] for m in done)
    seconds += (rounds - len(done)) * per_round
    sent = setup.get("setup_bytes_per_peer", 0.0) + rounds * last["bytes_sent_per_peer"]
    mins, secs = divmod(round(seconds), 60)
    took = f"{mins} min {secs} s" if mins else f"{seconds:.1f} s"
    what = "estimate after round 1" if len(done) == 1 else "revised after round 2 (warm-up over)"
    return (
        f"{what} of {rounds}: about {took} in all and {sent / 1e6:,.1f} MB sent per peer "
        f"({per_round:.2f} s and {last['bytes_sent_per_peer'] / 1e6:,.2f} MB per round)"
    )


class MetricsLog:
    """The trainer's per-round callback: a log line (debug level when ``quiet``, e.g. under a
    progress bar), and TensorBoard scalars in ``tensorboard`` when given. Silent until
    ``active`` is set (only the writer peer logs rounds)."""

    def __init__(self, *, tensorboard: Path | None, quiet: bool) -> None:
        self.log, self.quiet, self.writer, self.active = get_logger(), quiet, None, False
        if tensorboard is not None:
            from dmhe.config import ConfigError

            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
                ) from None
            self.writer = SummaryWriter(str(tensorboard))

    def __call__(self, m: dict[str, Any]) -> None:
        """Log one round's metrics."""
        if not self.active:
            return
        self.log.log(10 if self.quiet else 20, "%s", log_metrics_line(m))
        if self.writer is None:
            return
        step = m["round"]
        for key in ("accuracy", "loss", "bytes_sent_per_peer", "bytes_per_value", "dp_epsilon"):
            if isinstance(m.get(key), (int, float)):
                self.writer.add_scalar(key, m[key], step)
        for phase, seconds in m.get("time", {}).items():
            self.writer.add_scalar(f"time/{phase}", seconds, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
