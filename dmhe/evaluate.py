"""``dmhe eval RUN``: load a run folder's checkpoint and evaluate it on the test split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["eval_command"]

EXIT_USAGE = 2


def eval_command(args: argparse.Namespace) -> int:
    """``dmhe eval RUN``: the run's checkpoint on its test split; 0, or 2 for a bad folder."""
    from dmhe.config import ConfigError, TrainConfig, to_flags
    from dmhe.data import DatasetError, load_dataset
    from dmhe.models import ModelError, build_model, evaluate_model
    from dmhe.rundir import RUN_INFO, RunDir

    run = Path(args.run)
    try:
        if not (run / RUN_INFO).is_file():
            raise ConfigError(f"{run}: not a dmhe run folder (no {RUN_INFO})")
        try:
            info = json.loads((run / RUN_INFO).read_text())
            cfg = TrainConfig.from_dict(info["config"])
            ckpt = RunDir(run).load_checkpoint("cpu")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"{run}: unreadable run: {exc}") from None
        if ckpt is None:
            raise ConfigError(f"{run}: no checkpoint (the run has not finished a round)")
        import torch

        bundle = load_dataset(
            cfg.dataset,
            data_dir=args.data_dir or cfg.data_dir,
            synthetic_shape=cfg.synthetic_shape,
            synthetic_size=cfg.synthetic_size,
            seed=cfg.seed,
        )
        model = build_model(cfg.model, bundle.input_shape, bundle.num_classes)
        model.load_state_dict(ckpt["model"])
        device = torch.device(args.device)
        acc, loss = evaluate_model(model.to(device), bundle.test, device)
    except (ConfigError, DatasetError, ModelError) as exc:
        print(f"dmhe: error: {to_flags(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    n = len(bundle.test)  # type: ignore[arg-type]
    print(
        f"{run}: round {ckpt['round']}, {cfg.dataset} test split ({n} samples): "
        f"accuracy {acc:.4f}, loss {loss:.4f}"
    )
    return 0
