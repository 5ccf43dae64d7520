"""The small synthetic training set-up shared by the trainer tests (findings D6/D8).

`small_config(**over)` is the one place the tiny TrainConfig is spelt: 3 peers on a synthetic
1x8x8 set of 120 training / 40 test samples, an MLP, batch 16, 2 rounds. Each test module passes
only what it changes (mode, rounds, local_steps, out_dir, ...). The `small_config` fixture in
conftest.py hands the same factory to tests that prefer a fixture.
"""

from __future__ import annotations

from typing import Any

from dmhe.config import TrainConfig

SMALL_BASE: dict[str, Any] = dict(
    dataset="synthetic",
    model="mlp",
    synthetic_shape=(1, 8, 8),
    synthetic_size=(120, 40),
    peers=3,
    rounds=2,
    batch_size=16,
)


def small_fields(**over: Any) -> dict[str, Any]:
    """The small set-up's fields with `over` applied (a fresh dict)."""
    return {**SMALL_BASE, **over}


def small_config(**over: Any) -> TrainConfig:
    """A TrainConfig of the small set-up with `over` applied."""
    return TrainConfig(**small_fields(**over))
