"""The small convolutional classifier every learner trains, and how its inputs are scaled."""

from __future__ import annotations

import torch
from torch import Tensor, nn

_MIN_INPUT_SIZE = 8
TOO_SMALL = "input_size must be >= {minimum}, got {input_size}"


class SmallCNN(nn.Module):
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

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, hidden): what drift detectors and replay look at."""
        return self.hidden(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, n_classes) for float images (N, C, H, W) in [0, 1]."""
        return self.classifier(self.features(x))


def build_model(*, n_classes: int, in_channels: int, input_size: int, seed: int) -> SmallCNN:
    """A freshly initialised SmallCNN whose weights depend only on `seed`.

    The seed is applied inside a forked RNG so the caller's global random state is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(n_classes=n_classes, in_channels=in_channels, input_size=input_size)


def to_float(x: Tensor) -> Tensor:
    """Images as float32 in [0, 1]: uint8 pixels are divided by 255, float input passes through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not torch.is_floating_point(x):
        raise TypeError(f"images must be uint8 or floating point, got {x.dtype}")
    return x.to(torch.float32)
