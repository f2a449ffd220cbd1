"""What every classifier a learner trains offers (penultimate features, a linear head, which
layers learn), and the small convolutional network of the demo."""

from __future__ import annotations

import copy
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

    ``arch`` is what :func:`build_model` needs to build it again (the manifest's ``arch``);
    subclasses keep their head in ``self.classifier``.
    """

    arch: dict[str, Any]

    @property
    def head(self) -> nn.Linear:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The feature extractor's top-level blocks that hold parameters, input first."""
        raise NotImplementedError

    def with_classes(self, n_classes: int, seed: int = 0) -> Classifier:
        """A copy whose head has ``n_classes`` outputs: the rows of the classes it knows are
        kept as they are, the new classes' rows start fresh (seeded). A class added to a
        stream takes the next output, so a head only ever grows."""
        head = self.head
        if n_classes < head.out_features:
            raise ValueError(f"a head of {head.out_features} classes cannot shrink to {n_classes}")
        grown = copy.deepcopy(self)
        if n_classes == head.out_features:
            return grown
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            new = nn.Linear(head.in_features, n_classes, bias=head.bias is not None)
        with torch.no_grad():
            new.weight[: head.out_features] = head.weight
            if head.bias is not None and new.bias is not None:
                new.bias[: head.out_features] = head.bias
        new.requires_grad_(head.weight.requires_grad)
        grown.classifier = new.to(head.weight.device)
        grown.arch = {**grown.arch, "n_classes": n_classes}
        return grown

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
