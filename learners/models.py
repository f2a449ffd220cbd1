"""Building a classifier by name (the small CNN, or a torchvision or timm model from
:mod:`learners.architectures`), and how inputs are scaled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from learners.architectures import build_classifier, normalisation_of
from learners.classifier import (
    SMALL_CNN,
    TOO_SMALL,
    TRAIN_LAYERS,
    Classifier,
    SmallCNN,
    TrainLayers,
)

__all__ = [
    "SMALL_CNN",
    "TOO_SMALL",
    "TRAIN_LAYERS",
    "Classifier",
    "SmallCNN",
    "TrainLayers",
    "build_model",
    "to_float",
]


def build_model(
    *,
    n_classes: int,
    in_channels: int,
    input_size: int,
    seed: int,
    name: str = SMALL_CNN,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: Mapping[str, Tensor] | Path | None = None,
    train: TrainLayers = "all",
) -> Classifier:
    """A classifier by architecture ``name`` whose fresh weights depend only on ``seed``, or
    whose weights come from ``weights`` (a state dict in the library's own layout, or a local
    file; see :func:`learners.architectures.build_classifier`).

    The seed is applied inside a forked RNG so the caller's global random state is untouched.
    ``train``: which layers learn (:meth:`Classifier.train_only`). Manifests written before
    architectures had names build the SmallCNN, as they always did.
    """
    model: Classifier
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == SMALL_CNN and weights is None:
            model = SmallCNN(n_classes=n_classes, in_channels=in_channels, input_size=input_size)
        else:
            model = build_classifier(
                name,
                n_classes=n_classes,
                in_channels=in_channels,
                input_size=input_size,
                mean=mean,
                std=std,
                weights=weights,
            )
    model.arch = {
        "name": name,
        "n_classes": n_classes,
        "in_channels": in_channels,
        "input_size": input_size,
    }
    if train != "all":  # manifests of fully trained models stay as they always were
        model.train_only(train)
        model.arch["train"] = train
    if name != SMALL_CNN:
        model.arch["mean"], model.arch["std"] = normalisation_of(model, in_channels)
    return model


def to_float(x: Tensor) -> Tensor:
    """Images as float32 in [0, 1]: uint8 pixels are divided by 255, float input passes through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not torch.is_floating_point(x):
        raise TypeError(f"images must be uint8 or floating point, got {x.dtype}")
    return x.to(torch.float32)
