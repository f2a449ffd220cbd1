"""Predictions of a model and its accuracy overall and per group (the fairness gate's input)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from torch import Tensor, nn

from learners.models import to_float

LENGTHS_DIFFER = "y_true, y_pred, groups differ in length: {}, {}, {}"


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Predicted labels (N,) int64 and softmax probabilities (N, n_classes), in eval mode.

    The model's training flag is restored afterwards; an empty x gives empty results.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            probs = [
                torch.softmax(
                    model(to_float(x[start : start + batch_size]).to(device)), dim=1
                ).cpu()
                for start in range(0, max(len(x), 1), batch_size)
            ]
    finally:
        model.train(was_training)
    probabilities = torch.cat(probs)
    return probabilities.argmax(dim=1).to(torch.int64), probabilities


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics over all samples and for each group, plus how many samples each group has."""

    overall: dict[str, float]
    by_group: dict[str, dict[str, float]]
    counts: dict[str, int]


def _as_array(values: Tensor | np.ndarray | Sequence[Any]) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest macro AUC from class probabilities; NaN where a slice has one class only."""
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    scores = proba[:, present]
    scores = scores / np.clip(scores.sum(axis=1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return float(roc_auc_score(y_true == present[1], scores[:, 1]))
    return float(roc_auc_score(y_true, scores, multi_class="ovr", labels=present))


def evaluate_by_group(
    y_true: Tensor | np.ndarray | Sequence[int],
    y_pred: Tensor | np.ndarray | Sequence[int],
    groups: Tensor | np.ndarray | Sequence[Any],
    proba: Tensor | np.ndarray | None = None,
) -> GroupMetrics:
    """Accuracy overall and per group (group names as strings), computed by fairlearn.

    With class probabilities ``proba`` it adds macro precision, recall and F1 and the
    one-vs-rest AUC (NaN for a slice holding one class). No samples give accuracy 0.0
    overall and no groups, so the shape never changes for a given call.
    """
    truth, predicted, group = _as_array(y_true), _as_array(y_pred), _as_array(groups)
    if not len(truth) == len(predicted) == len(group):
        raise ValueError(LENGTHS_DIFFER.format(len(truth), len(predicted), len(group)))
    if len(truth) == 0:
        return GroupMetrics(overall={"accuracy": 0.0}, by_group={}, counts={})
    names = np.array([str(g) for g in group], dtype=object)
    metrics: dict[str, Any] = {"accuracy": accuracy_score}
    sample_params: dict[str, dict[str, np.ndarray]] = {}
    if proba is not None:
        macro = {"average": "macro", "zero_division": 0}
        scores = _as_array(proba)
        metrics |= {
            "precision": partial(precision_score, **macro),
            "recall": partial(recall_score, **macro),
            "f1": partial(f1_score, **macro),
            # MetricFrame splits only 1-D sample parameters: pass row numbers, not the
            # (N, classes) probabilities, and look the rows up here.
            "auc": lambda y_t, _y_p, rows: _auc(y_t, scores[rows]),
        }
        sample_params = {"auc": {"rows": np.arange(len(truth))}}
    frame = MetricFrame(
        metrics=metrics,
        y_true=truth,
        y_pred=predicted,
        sensitive_features=names,
        sample_params=sample_params or None,
    )
    by_group = {
        str(name): {metric: float(value) for metric, value in row.items()}
        for name, row in frame.by_group.iterrows()
    }
    unique, counts = np.unique(names.astype(str), return_counts=True)
    return GroupMetrics(
        overall={metric: float(value) for metric, value in frame.overall.items()},
        by_group=by_group,
        counts={str(name): int(count) for name, count in zip(unique, counts, strict=True)},
    )
