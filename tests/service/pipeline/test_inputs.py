"""One forward pass of the champion gives the numbers of ``predict`` and the penultimate layer."""

from __future__ import annotations

import numpy as np
import torch

from drift.features import penultimate_features
from learners.evaluation import predict
from learners.models import build_model, to_float
from service.pipeline.inputs import FORWARD_BATCH, model_outputs


def test_one_pass_gives_the_predictions_probabilities_and_features_of_two() -> None:
    model = build_model(n_classes=10, in_channels=1, input_size=28, seed=3)
    generator = torch.Generator().manual_seed(0)
    shape = (FORWARD_BATCH + 37, 1, 28, 28)  # two chunks
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    out = model_outputs(model, x, features=True)
    pred, proba = predict(model, to_float(x))
    assert np.array_equal(out.predictions, pred.numpy())
    assert np.array_equal(out.probabilities, proba.numpy())
    assert out.features is not None
    assert np.array_equal(out.features, penultimate_features(model, to_float(x)))
    assert model_outputs(model, x, features=False).features is None
    assert model.training  # its training flag is given back


def test_an_empty_batch_gives_empty_outputs() -> None:
    model = build_model(n_classes=3, in_channels=1, input_size=28, seed=0)
    out = model_outputs(model, torch.zeros((0, 1, 28, 28), dtype=torch.uint8), features=True)
    assert out.predictions.shape == (0,) and out.probabilities.shape == (0, 3)
