"""What every classifier a learner trains offers (penultimate features and a linear head),
the small convolutional network of the demo, and how inputs are scaled.

Library models (torchvision, timm) are in :mod:`learners.architectures`; :func:`build_model`
builds either by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

_MIN_INPUT_SIZE = 8
TOO_SMALL = "input_size must be >= {minimum}, got {input_size}"


SMALL_CNN = "small_cnn"
TrainLayers = Literal["all", "last-block", "head"]
TRAIN_LAYERS: tuple[TrainLayers, ...] = ("all", "last-block", "head")


class Classifier(nn.Module):
    """A classifier as learners see it: float pixels in [0, 1] to penultimate features
    (what drift detectors, replay and explanations look at), and a linear head on them.

    ``arch`` is what :func:`build_model` needs to build it again (the manifest's ``arch``).
    """

    arch: dict[str, Any]

    @property
    def head(self) -> nn.Linear:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The feature extractor's top-level blocks that hold parameters, input first."""
        raise NotImplementedError

    def train_only(self, layers: TrainLayers) -> None:
        """Train ``all`` parameters, the ``head`` only, or the head and the ``last-block``;
        frozen blocks stop taking gradients and stay in eval mode (batch-norm statistics
        included) whatever ``train()`` is called with."""
        if layers not in TRAIN_LAYERS:
            raise ValueError(f"train: {layers!r} is not one of {', '.join(TRAIN_LAYERS)}")
        trainable: dict[str, list[nn.Module]] = {
            "all": [self],
            "head": [self.head],
            "last-block": [self.head, self.blocks()[-1]],
        }
        for parameter in self.parameters():
            parameter.requires_grad_(layers == "all")
        for module in trainable[layers]:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for block in self.blocks():
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, D) for float images (N, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, n_classes) for float images (N, C, H, W) in [0, 1]."""
        return self.head(self.features(x))


class SmallCNN(Classifier):
    """Two conv blocks, a hidden layer and a linear classifier: small enough to retrain on a CPU."""

    def __init__(
        self, n_classes: int = 10, in_channels: int = 1, input_size: int = 28, hidden: int = 64
    ) -> None:
        super().__init__()
        if input_size < _MIN_INPUT_SIZE:
            raise ValueError(TOO_SMALL.format(minimum=_MIN_INPUT_SIZE, input_size=input_size))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = input_size // 2 // 2
        self.hidden = nn.Sequential(nn.Linear(32 * side * side, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, n_classes)
        self.arch = {
            "name": SMALL_CNN,
            "n_classes": n_classes,
            "in_channels": in_channels,
            "input_size": input_size,
        }

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def blocks(self) -> list[nn.Module]:
        return [self.body, self.hidden]

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, hidden): what drift detectors and replay look at."""
        return self.hidden(self.body(x))


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
            from learners.architectures import build_classifier

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
        from learners.architectures import normalisation_of

        model.arch["mean"], model.arch["std"] = normalisation_of(model, in_channels)
    return model


def to_float(x: Tensor) -> Tensor:
    """Images as float32 in [0, 1]: uint8 pixels are divided by 255, float input passes through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not torch.is_floating_point(x):
        raise TypeError(f"images must be uint8 or floating point, got {x.dtype}")
    return x.to(torch.float32)
