"""Models by name: small ones for MNIST-shaped input, CIFAR-10 ones, and any torchvision model."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["MODELS", "ModelError", "build_model", "evaluate_model"]

MODELS = ("logreg", "mlp", "cnn", "cifar_cnn", "resnet18")


class ModelError(ValueError):
    """Unknown model name, or a model that does not fit the input."""


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: flatten + one linear layer (7,850 values on 28x28x1,
    10 classes) -- small enough that DP noise on the averaged update does not swamp it."""
    d = 1
    for s in input_shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    """A two-layer perceptron over the flattened input."""
    d = 1
    for s in input_shape:
        d *= s
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two conv layers + one linear layer (about 21k parameters on 28x28x1)."""
    if len(input_shape) != 3:
        raise ModelError(f"cnn needs (C, H, W) input, got {input_shape}")
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(_flat_size(features, input_shape), num_classes))


def cifar_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The classic three-block CIFAR-10 CNN (no batch norm, so FedAvg has no buffers to mix)."""
    if len(input_shape) != 3:
        raise ModelError(f"cifar_cnn needs (C, H, W) input, got {input_shape}")
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return nn.Sequential(
        features,
        nn.Linear(_flat_size(features, input_shape), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``logreg``, ``mlp``, ``cnn``, ``cifar_cnn``, ``resnet18``, or any torchvision
    classification model name (built with ``weights=None``: nothing is downloaded)."""
    input_shape = tuple(input_shape)
    if name == "logreg":
        return logreg(input_shape, num_classes)
    if name == "mlp":
        return mlp(input_shape, num_classes)
    if name == "cnn":
        return cnn(input_shape, num_classes)
    if name == "cifar_cnn":
        return cifar_cnn(input_shape, num_classes)
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if len(input_shape) == 3 and input_shape[0] != 3:
            raise ModelError(
                f"torchvision model {name!r} expects 3 input channels, got {input_shape}"
            )
        return model
    raise ModelError(
        f"unknown model {name!r}; known: {', '.join(MODELS)} or a torchvision classification model"
    )


@torch.no_grad()
def evaluate_model(
    model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 1000
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy loss)`` of ``model`` on a labelled dataset."""
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for x, y in DataLoader(data, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss_sum += float(loss_fn(out, y))
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1), loss_sum / max(total, 1)
