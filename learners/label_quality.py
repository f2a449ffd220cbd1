"""Which given labels are likely wrong: confident learning (cleanlab) on probabilities that
the model gave before it trained on those samples (out of sample, as cleanlab requires).

A label is flagged when cleanlab's confident joint finds it off-diagonal (the model is more
confident in another class than that class's own threshold allows); each sample also gets
cleanlab's label-quality score (the self-confidence in its given label, low is suspect) and
the class the model believes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

MIN_SAMPLES = 20  # fewer: no estimate of the per-class thresholds is worth flagging on


@dataclass(frozen=True)
class LabelIssues:
    """Per sample of the window: flagged or not, its label-quality score, the believed class."""

    flagged: np.ndarray  # bool (N,)
    scores: np.ndarray  # float (N,) in [0, 1]: low means the given label is likely wrong
    believed: np.ndarray  # int64 (N,): the class the model gives most probability

    def share_by_group(self, groups: np.ndarray) -> dict[str, tuple[int, int]]:
        """(flagged, n) per group."""
        names = np.asarray([str(g) for g in groups])
        return {
            str(g): (int(self.flagged[names == g].sum()), int((names == g).sum()))
            for g in sorted(set(names.tolist()))
        }


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> LabelIssues:
    """The label issues of ``labels`` (N,) under out-of-sample ``probabilities`` (N, K).

    A label the model has no output for (a class added after it was trained) is not judged:
    never flagged, score 1.0.
    """
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    believed = probabilities.argmax(axis=1).astype(np.int64)
    flagged, scores = np.zeros(len(labels), dtype=bool), np.ones(len(labels))
    known = labels < probabilities.shape[1]
    if known.sum() < MIN_SAMPLES:
        return LabelIssues(flagged, scores, believed)
    with warnings.catch_warnings():
        # cleanlab warns of classes absent from a window's labels; the thresholds of the
        # classes present are still sound, and an absent class flags nothing.
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab's default process pool cannot start inside a Celery worker
        # process (daemonic processes may not have children), and a window is small.
        flagged[known] = cleanlab_issues(
            labels[known], probabilities[known], filter_by="prune_by_noise_rate", n_jobs=1
        )
        scores[known] = get_label_quality_scores(
            labels[known], probabilities[known], method="self_confidence"
        )
    return LabelIssues(flagged, scores, believed)
