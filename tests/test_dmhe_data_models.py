"""Datasets (offline), peer splits and models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmhe.data import DatasetError, dirichlet_split, iid_split, load_dataset
from dmhe.models import ModelError, build_model


def test_digits_loader_offline():
    b = load_dataset("digits")
    assert len(b.train) == 4000 and len(b.test) == 1000
    x, y = b.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert sorted(np.unique(b.train_targets).tolist()) == list(range(10))
    assert np.bincount(b.test.tensors[1].numpy()).tolist() == [100] * 10
    again = load_dataset("digits")
    assert torch.equal(again.test.tensors[0], b.test.tensors[0])


def test_torchvision_datasets_refuse_without_files(tmp_path):
    with pytest.raises(DatasetError, match="--download"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="data-dir"):
        load_dataset("cifar10")


def test_synthetic_shape():
    b = load_dataset("synthetic", synthetic_shape=(3, 8, 8), synthetic_size=(50, 20))
    assert b.train[0][0].shape == (3, 8, 8) and len(b.test) == 20


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0], ids=lambda a: f"alpha={a}")
@pytest.mark.parametrize("k", [2, 7], ids=lambda k: f"K={k}")
def test_dirichlet_split_covers_every_sample_once(alpha, k):
    targets = np.random.default_rng(0).integers(0, 10, size=3000)
    parts = dirichlet_split(targets, k, alpha, seed=1)
    assert len(parts) == k and min(len(p) for p in parts) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(3000))
    again = dirichlet_split(targets, k, alpha, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_small_alpha_is_skewed():
    targets = np.repeat(np.arange(10), 300)
    parts = dirichlet_split(targets, 5, 0.05, seed=0)
    classes_seen = [len(np.unique(targets[p])) for p in parts]
    assert min(classes_seen) < 10


def test_iid_split():
    parts = iid_split(103, 4, seed=0)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(103))


@pytest.mark.parametrize(
    "name,shape",
    [("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("cifar_cnn", (3, 32, 32))],
)
def test_models_forward(name, shape):
    m = build_model(name, shape, 10)
    assert m(torch.zeros(2, *shape)).shape == (2, 10)


def test_logreg_is_one_linear_layer():
    m = build_model("logreg", (1, 28, 28), 10)
    assert sum(p.numel() for p in m.parameters()) == 28 * 28 * 10 + 10
    x = torch.randn(3, 1, 28, 28)
    lin = m[1]
    torch.testing.assert_close(m(x), x.flatten(1) @ lin.weight.T + lin.bias)


def test_torchvision_models_by_name():
    m = build_model("resnet18", (3, 32, 32), 10)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ModelError):
        build_model("no_such_model", (3, 32, 32), 10)
