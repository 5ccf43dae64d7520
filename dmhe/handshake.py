"""The configuration handshake: before any other message, the peers agree on the run.

Peers in separate processes are started separately (``torchrun`` passes each the same command
line, but nothing stops a user from starting one with other flags). A peer with other settings
either hangs the others (a different ``rounds`` or ``mode`` sends other messages) or, worse,
silently trains another model (a different ``lr``). So the first exchange of every run is this
handshake, and its answer decides whether anything else happens:

1. every peer sends rank 0 its run-defining settings (:func:`run_settings`: the configuration
   without the peer-local paths, the aggregator's description and modulus, which carry its
   parameters and options, its security summary (smudging notion, lambda), the package
   version, the round it starts from and the digest of its model) and, if its own preparation
   failed (a locked run directory, a corrupt checkpoint), the reason;
2. rank 0 sends every peer the table of distinct settings and the ranks holding each;
3. every peer checks that the table holds its own settings, then names every difference.

Every peer raises the same :class:`HandshakeError` (a :class:`~dmhe.config.ConfigError`: the CLI
exits 2) naming the differing settings and the ranks, or naming the peers whose preparation
failed. Messages are control messages (simulated dropouts never strike them); a peer sends
one and receives one, rank 0 receives and sends K-1. The in-process simulation runs the same
exchange, trivially equal, so both transports run the same code. A closing barrier makes sure
that every table has arrived before any process may exit.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from dmhe.config import ConfigError, TrainConfig
from dmhe.transport import Transport

if TYPE_CHECKING:
    from dmhe.aggregators.base import Aggregator

__all__ = [
    "LOCAL_FIELDS",
    "HandshakeError",
    "agree",
    "describe_differences",
    "run_settings",
    "settings_digest",
]

MAGIC = b"dmhe-handshake-v1\n"

#: configuration fields that may differ between peers: where each keeps its files, which of its
#: devices it computes on (the device kind must agree: see ``run_settings``)
LOCAL_FIELDS = frozenset({"out_dir", "data_dir", "download", "device"})


class HandshakeError(ConfigError):
    """The peers disagree on the run's settings, or one could not prepare its part."""


def run_settings(
    config: TrainConfig, aggregator: Aggregator, start_round: int, model_digest: str
) -> dict[str, Any]:
    """The settings every peer must share, as plain JSON data (one entry per setting): the
    configuration without :data:`LOCAL_FIELDS`, the device kind, the aggregator's description
    (parameters, plan, options), modulus and security summary, the package version, the round
    the peer starts from and the digest of its model."""
    from dmhe import __version__
    from gpubfv.backend import Backend  # the one place that knows device names

    settings = {k: v for k, v in config.to_dict().items() if k not in LOCAL_FIELDS}
    settings["device_kind"] = Backend.device_kind(config.device)
    settings["aggregator"] = aggregator.describe()
    settings["modulus"] = str(aggregator.modulus)
    settings["security"] = aggregator.security()
    settings["version"] = __version__
    settings["start_round"] = start_round
    settings["model_digest"] = model_digest
    # a JSON round trip: what is compared is exactly what travels (tuples become lists)
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_digest(settings: dict[str, Any]) -> str:
    """BLAKE2b-256 (hex) of the canonical JSON of ``settings``."""
    data = json.dumps(settings, sort_keys=True).encode()
    return hashlib.blake2b(data, digest_size=32, person=b"dmhe-settings").hexdigest()


def _encode(obj: Any) -> bytes:
    return MAGIC + json.dumps(obj, sort_keys=True).encode()


def _decode(data: bytes, src: int) -> Any:
    if not data.startswith(MAGIC):
        raise HandshakeError(
            f"peer {src} sent something other than a handshake (another dmhe version?)"
        )
    try:
        return json.loads(data[len(MAGIC) :])
    except ValueError:
        raise HandshakeError(f"peer {src} sent an unreadable handshake") from None


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ",".join(map(str, sorted(ranks)))


def describe_differences(groups: list[dict[str, Any]]) -> list[str]:
    """One line per setting on which the ``groups`` (``{"ranks": [...], "settings": {...}}``)
    differ: ``"lr: ranks 0,1,2 = 0.1; rank 3 = 0.3"``. Empty when they all agree."""
    names = sorted({k for g in groups for k in g["settings"]})
    lines = []
    for name in names:
        values: dict[str, list[int]] = {}
        for g in groups:
            shown = json.dumps(g["settings"].get(name, "<absent>"), sort_keys=True)
            values.setdefault(shown, []).extend(g["ranks"])
        if len(values) > 1:
            parts = sorted(values.items(), key=lambda kv: min(kv[1]))
            lines.append(f"{name}: " + "; ".join(f"{_ranks(r)} = {v}" for v, r in parts))
    return lines


def _table(transport: Transport, mine: dict[str, Any]) -> dict[str, Any]:
    """Rank 0 collects every peer's entry and answers with the grouped table."""
    k = transport.world_size
    if transport.rank != 0:
        transport.send_control(0, _encode(mine))
        return _decode(transport.recv(0), 0)
    entries = {0: mine}
    for src in range(1, k):
        entries[src] = _decode(transport.recv(src), src)
    groups: dict[str, dict[str, Any]] = {}
    errors = {}
    for rank, entry in sorted(entries.items()):
        if entry.get("error"):
            errors[str(rank)] = entry["error"]
        g = groups.setdefault(entry["digest"], {"settings": entry["settings"], "ranks": []})
        g["ranks"].append(rank)
    table = {"groups": list(groups.values()), "errors": errors, "world_size": k}
    payload = _encode(table)
    for dst in range(1, k):
        transport.send_control(dst, payload)
    return table


def agree(transport: Transport, settings: dict[str, Any], *, error: str | None = None) -> str:
    """Run the handshake as ``transport.rank``; returns the common settings digest.

    ``error``: why this peer could not prepare its part (it still takes part, so that every
    peer stops with the reason instead of waiting for it). Raises :class:`HandshakeError` on
    every peer alike when a peer reported an error or the settings differ.
    """
    digest = settings_digest(settings)
    table = _table(transport, {"digest": digest, "settings": settings, "error": error})
    transport.barrier()  # every table delivered before any peer may stop
    groups = table["groups"]
    ranks = sorted(r for g in groups for r in g["ranks"])
    if ranks != list(range(transport.world_size)):
        raise HandshakeError(
            f"the handshake table covers ranks {ranks}, not 0..{transport.world_size - 1}"
        )
    if not any(transport.rank in g["ranks"] and g["settings"] == settings for g in groups):
        raise HandshakeError(f"rank {transport.rank}: the handshake table lost its settings")
    if table["errors"]:
        by_error: dict[str, list[int]] = {}
        for r, e in table["errors"].items():
            by_error.setdefault(e, []).append(int(r))
        if len(by_error) == 1 and len(next(iter(by_error.values()))) == transport.world_size:
            raise HandshakeError(next(iter(by_error)))  # every peer alike (as in-process)
        parts = sorted(by_error.items(), key=lambda kv: min(kv[1]))
        reasons = "; ".join(f"{_ranks(r)}: {e}" for e, r in parts)
        raise HandshakeError(f"not every peer could start: {reasons}")
    lines = describe_differences(groups)
    if lines:
        raise HandshakeError(
            "the peers were started with different settings (start every peer with the same "
            "command): " + " | ".join(lines)
        )
    return digest
