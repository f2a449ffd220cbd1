"""Feature spaces in which covariate drift is tested."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class HasFeatures(Protocol):
    """A model exposing its penultimate layer, as ``learners.models.SmallCNN`` does."""

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> object: ...

    @property
    def training(self) -> bool: ...


def penultimate_features(model: HasFeatures, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The model's penultimate activations for float images ``x`` as a float32 array."""
    was_training = model.training
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunks.append(model.features(x[start : start + batch_size]).float())
    if was_training:
        model.train()  # type: ignore[attr-defined]
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)
