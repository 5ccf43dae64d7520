"""Settings of ``dmhe train`` from its flags: ``--config FILE``, ``--epochs``, the default
output folder and the default ε of the DP modes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["config_from_args", "default_out_dir", "load_config_file"]


def default_out_dir(mode: str, root: str | Path = "runs") -> Path:
    """``runs/<mode>-<timestamp>`` (a suffix if taken); under torchrun the launcher's run id
    instead of the time, so that every rank names the same folder."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    stamp = run_id if "WORLD_SIZE" in os.environ and run_id != "none" else None
    base = Path(root) / f"{mode}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while stamp is None and path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def load_config_file(path: str) -> dict[str, Any]:
    """The settings of a ``--config`` JSON file as parser defaults: a :class:`TrainConfig`
    dict, or a ``run.json`` (its ``config`` block, without the old run's output folder);
    unknown settings raise :class:`ConfigError` naming them."""
    from dmhe.config import ConfigError, TrainConfig

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object")
    if isinstance(data.get("config"), dict):  # a run.json: its settings, for a fresh run
        data = {k: v for k, v in data["config"].items() if k != "out_dir"}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"--config {path}: unknown settings {unknown}")
    if "aggregator_options" in data:
        opts = data.pop("aggregator_options") or {}
        data["aggregator_option"] = [f"{k}={json.dumps(v)}" for k, v in opts.items()]
    for key in ("synthetic_shape", "synthetic_size"):
        if key in data:
            data[key] = tuple(data[key])
    return data


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` of parsed ``dmhe train`` flags: rounds from ``--epochs``, the
    default ε of the DP modes, and the default output folder."""
    from dmhe.config import DEFAULT_DP_EPSILON, MODES, ConfigError, TrainConfig, rounds_for_epochs

    options: dict[str, Any] = {}
    for item in args.aggregator_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--aggregator-option needs KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.synthetic_size is not None and len(args.synthetic_size) != 2:
        raise ConfigError("--synthetic-size needs N_TRAIN,N_TEST")
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name) and getattr(args, f.name) is not None
    }
    values["synthetic_shape"] = tuple(args.synthetic_shape)
    values["synthetic_size"] = tuple(args.synthetic_size)
    values["aggregator_options"] = options
    for nullable in ("threshold", "alpha", "dp_epsilon", "dp_sigma", "data_dir", "out_dir"):
        values[nullable] = getattr(args, nullable, None)
    if args.mode in MODES and MODES[args.mode].dp and args.dp_sigma is None:
        values["dp_epsilon"] = args.dp_epsilon or DEFAULT_DP_EPSILON
    cfg = TrainConfig(**values)
    if args.epochs is not None:
        from dmhe.data import DatasetError, load_dataset

        try:
            bundle = load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                download=cfg.download,
                synthetic_shape=cfg.synthetic_shape,
                synthetic_size=cfg.synthetic_size,
                seed=cfg.seed,
            )
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        cfg.rounds = rounds_for_epochs(
            args.epochs,
            train_size=len(bundle.train),  # type: ignore[arg-type]
            peers=cfg.peers,
            local_steps=cfg.local_steps,
            batch_size=cfg.batch_size,
        )
    if cfg.out_dir is None and not args.resume:
        cfg.out_dir = str(default_out_dir(cfg.mode))
    return cfg
