"""The prequential check: how the champion did on the window before it learns from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learners.evaluation import evaluate_by_group
from service.store.batches import Batch


@dataclass(frozen=True)
class Prequential:
    """Which samples the champion got right, and its accuracy overall and per group."""

    correct: np.ndarray  # bool (N,), aligned with the window's batch
    accuracy: dict[str, float]
    errors: dict[str, list[bool]]  # per group, in arrival order: the concept detector's input
    counts: dict[str, tuple[int, int]]  # per group (correct, n): the adaptive policy's input


def score_window(batch: Batch, predictions: np.ndarray) -> Prequential:
    """Score the champion's predictions on the window's labels, overall and per group."""
    correct = predictions == batch.y
    metrics = evaluate_by_group(batch.y, predictions, batch.groups)
    errors: dict[str, list[bool]] = {}
    for group, ok in zip(batch.groups, correct, strict=True):
        errors.setdefault(group, []).append(not ok)
    return Prequential(
        correct=correct,
        accuracy={
            "overall": round(metrics.overall["accuracy"], 4),
            **{g: round(m["accuracy"], 4) for g, m in metrics.by_group.items()},
        },
        errors=errors,
        counts={g: (len(e) - sum(e), len(e)) for g, e in sorted(errors.items())},
    )
