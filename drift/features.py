"""Feature spaces in which covariate drift is tested.

``"penultimate"``: the champion's penultimate layer. It is where the model looks,
so shifts that matter to it show up, but it changes with every champion, so a
reference must be re-embedded after each swap and tests across champions are not
comparable.

``"encoder"``: a fixed, seeded, *untrained* convolutional encoder (alibi-detect's
``UAE`` around a small conv net), the "untrained autoencoder" of Rabanser et al.,
"Failing Loudly" (2019): random conv features preserve enough of the image
geometry for two-sample tests to find shifts, need no training, and stay the same
whatever the champion, so one reference serves for as long as the stream lasts.

``"properties"``: brightness, contrast, sharpness, noise and saturation of each image,
computed from the pixels (:mod:`drift.properties`): cheap, fixed, and explainable in words;
tested with KS per property, it sees the pixel noise the learned spaces smooth away.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn

WRONG_IMAGES = "expected images (N, {channels}, H, W), got shape {shape}"


class HasFeatures(Protocol):
    """A model exposing its penultimate layer, as ``learners.models.SmallCNN`` does."""

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> object: ...

    def train(self, mode: bool = True) -> object: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    @property
    def training(self) -> bool: ...


def penultimate_features(model: HasFeatures, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The model's penultimate activations for float images ``x`` as a float32 array."""
    was_training = model.training
    model.eval()
    chunks = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunks.append(model.features(x[start : start + batch_size].to(device)).float().cpu())
    if was_training:
        model.train()
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def _conv_encoder(in_channels: int, enc_dim: int) -> nn.Sequential:
    """Three stride-2 convolutions, pooled to 3x3, then a linear map to ``enc_dim``.

    At 28x28 the pooling is the identity (28 -> 14 -> 7 -> 3); larger images are
    averaged down to 3x3 so that any image size gives the same feature size.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(128 * 3 * 3, enc_dim),
    )


class UntrainedEncoder:
    """A fixed random conv encoder for images, from a seed: the ``"encoder"`` feature space.

    The weights are PyTorch's default initialisation drawn under ``seed`` (the global
    generator is left as it was), so the same ``(seed, in_channels, enc_dim)`` always
    gives the same encoder (with the same torch version), whatever the champion is.

    Parameters
    ----------
    enc_dim
        Size of the encoding.
    seed
        Seed of the weights.
    in_channels
        Channels of the images to encode.

    Examples
    --------
    >>> x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> a, b = UntrainedEncoder(seed=3), UntrainedEncoder(seed=3)
    >>> a.encode(x).shape, a.encode(x).dtype.name, bool((a.encode(x) == b.encode(x)).all())
    ((5, 32), 'float32', True)
    """

    def __init__(self, enc_dim: int = 32, seed: int = 0, in_channels: int = 1) -> None:
        if enc_dim < 1 or in_channels < 1:
            raise ValueError("enc_dim and in_channels must be positive")
        from alibi_detect.cd.pytorch.preprocess import UAE

        self.enc_dim = enc_dim
        self.seed = seed
        self.in_channels = in_channels
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = UAE(encoder_net=_conv_encoder(in_channels, enc_dim))
        self.net.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor | np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Encodings ``(N, enc_dim)``, float32, of float images ``x`` ``(N, C, H, W)`` in [0, 1]."""
        images = torch.as_tensor(x, dtype=torch.float32)
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                WRONG_IMAGES.format(channels=self.in_channels, shape=tuple(images.shape))
            )
        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunks.append(self.net(images[start : start + batch_size]))
        if not chunks:
            return np.zeros((0, self.enc_dim), dtype=np.float32)
        return torch.cat(chunks).numpy().astype(np.float32, copy=False)
