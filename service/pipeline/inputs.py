"""A claimed window's inputs, loaded once: its stream, its samples, the champion and its outputs.

The champion runs once over the window: one forward pass gives its predictions, its class
probabilities and, where drift is tested in the penultimate layer, the features of that
layer (the classifier head applied to those same features gives the logits, so the numbers
are those of ``predict`` and ``penultimate_features`` run apart).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learners.models import Classifier, to_float
from service.context import Service
from service.models.registry import LoadedVersion
from service.store.batches import Batch, load_batch
from service.store.schema import Stream, Window

FORWARD_BATCH = 512  # images per forward pass, as in learners.evaluation.predict


@dataclass(frozen=True)
class ModelOutputs:
    """A model's outputs on a batch of images, in the batch's order."""

    predictions: np.ndarray  # int64 (N,)
    probabilities: np.ndarray  # float32 (N, n_classes)
    features: np.ndarray | None  # float32 (N, hidden): the penultimate layer, when asked for


@dataclass(frozen=True)
class Champion:
    """The version serving the stream, and its outputs on the window's batch."""

    loaded: LoadedVersion
    outputs: ModelOutputs

    @property
    def version(self) -> int:
        return self.loaded.version


@dataclass(frozen=True)
class WindowInputs:
    """Everything the stages read about one claimed window; ``champion`` is None before v1."""

    stream: Stream
    window: Window
    batch: Batch
    champion: Champion | None

    @property
    def champion_version(self) -> int | None:
        return None if self.champion is None else self.champion.version


def model_outputs(model: Classifier, x: torch.Tensor, *, features: bool) -> ModelOutputs:
    """Predictions, probabilities and (if ``features``) penultimate features of ``model`` on
    images ``x``, from one forward pass in eval mode without gradients."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    probabilities, hidden = [], []
    try:
        with torch.no_grad():
            for start in range(0, max(len(x), 1), FORWARD_BATCH):
                h = model.features(to_float(x[start : start + FORWARD_BATCH]).to(device))
                probabilities.append(torch.softmax(model.head(h), dim=1).cpu())
                hidden.append(h.float().cpu())
    finally:
        model.train(was_training)
    proba = torch.cat(probabilities)
    return ModelOutputs(
        predictions=proba.argmax(dim=1).to(torch.int64).numpy(),
        probabilities=proba.numpy(),
        features=torch.cat(hidden).numpy().astype(np.float32, copy=False) if features else None,
    )


def load_inputs(service: Service, stream_name: str, window_id: int) -> WindowInputs:
    """The window's stream, samples and champion, and the champion's outputs on the samples."""
    with service.store.session() as session:
        stream = service.store.stream(session, stream_name)
        window = session.get(Window, window_id)
        if window is None:
            raise LookupError(f"window {window_id} of stream {stream_name!r} does not exist")
        batch = load_batch(session, stream, [window_id], quarantined=True)
    version = service.registry.champion(stream.id)
    if version is None:
        return WindowInputs(stream, window, batch, None)
    loaded = service.version(stream.name, version)
    penultimate = service.settings.drift_feature_space == "penultimate"
    outputs = model_outputs(loaded.model, batch.x, features=penultimate)
    return WindowInputs(stream, window, batch, Champion(loaded, outputs))
