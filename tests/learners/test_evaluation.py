"""predict and per-group accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.evaluation import LENGTHS_DIFFER, GroupMetrics, evaluate_by_group, predict
from learners.models import SmallCNN


@pytest.mark.parametrize("training", [True, False])
def test_predict(training: bool) -> None:
    model = SmallCNN(n_classes=4, input_size=8).train(training)
    x = (torch.rand(11, 1, 8, 8) * 255).to(torch.uint8)
    labels, probs = predict(model, x, batch_size=4)
    assert labels.shape == (11,) and labels.dtype == torch.int64
    assert probs.shape == (11, 4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(11))
    assert torch.equal(labels, probs.argmax(dim=1))
    assert model.training is training
    labels_float, _ = predict(model, x.float() / 255)
    assert torch.equal(labels, labels_float)


def test_accuracy_by_group() -> None:
    y_true = [0, 1, 1, 0, 2, 2]
    y_pred = [0, 1, 0, 0, 1, 2]
    groups = ["a", "a", "a", "b", "b", "c"]
    metrics = evaluate_by_group(y_true, y_pred, groups)
    assert metrics == GroupMetrics(
        overall={"accuracy": pytest.approx(4 / 6)},
        by_group={
            "a": {"accuracy": pytest.approx(2 / 3)},
            "b": {"accuracy": 0.5},
            "c": {"accuracy": 1.0},
        },
        counts={"a": 3, "b": 2, "c": 1},
    )


def test_inputs_as_tensors_arrays_and_lists_agree() -> None:
    y_true, y_pred, groups = [1, 0, 1, 1], [1, 1, 1, 0], [3, 3, 7, 7]
    from_lists = evaluate_by_group(y_true, y_pred, groups)
    from_arrays = evaluate_by_group(np.array(y_true), np.array(y_pred), np.array(groups))
    from_tensors = evaluate_by_group(
        torch.tensor(y_true), torch.tensor(y_pred), torch.tensor(groups)
    )
    assert from_lists == from_arrays == from_tensors
    assert from_lists.by_group == {"3": {"accuracy": 0.5}, "7": {"accuracy": 0.5}}


def test_one_group_has_the_same_shape() -> None:
    metrics = evaluate_by_group(torch.tensor([1, 2]), torch.tensor([1, 1]), ["all", "all"])
    assert metrics.overall == {"accuracy": 0.5}
    assert metrics.by_group == {"all": {"accuracy": 0.5}}
    assert metrics.counts == {"all": 2}


def test_mismatched_lengths_rejected() -> None:
    with pytest.raises(ValueError) as info:
        evaluate_by_group([1, 2], [1], ["a", "a"])
    assert str(info.value) == LENGTHS_DIFFER.format(2, 1, 2)


def test_empty_inputs() -> None:
    labels, probs = predict(SmallCNN(n_classes=3, input_size=8), torch.zeros(0, 1, 8, 8))
    assert labels.shape == (0,) and labels.dtype == torch.int64
    assert probs.shape == (0, 3)
    metrics = evaluate_by_group([], [], [])
    assert metrics == GroupMetrics(overall={"accuracy": 0.0}, by_group={}, counts={})
