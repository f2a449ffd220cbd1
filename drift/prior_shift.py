"""Prediction drift without labels: the served classes' shares against the reference's, and
the class priors they imply (black-box shift estimation, Lipton et al. 2018).

Under a pure label shift, the classifier's confusion ``C[i, j] = P(predicted i | true j)``
holds, so the served predictions' shares ``mu`` are ``C @ q`` for the new class priors
``q``: solving gives ``q`` from unlabelled traffic. ``C`` comes from the reference, where
the labels are known. None of the stack's libraries estimates priors this way (alibi-detect
tests, it does not estimate), hence the few lines of numpy here; the test itself is the
chi-square of :func:`drift.label.label_shift` on predicted classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriorEstimate:
    """Class priors of the reference (from its labels) and of the traffic (estimated)."""

    reference: list[float]
    estimated: list[float]

    @property
    def largest_change(self) -> tuple[int, float]:
        """The class whose prior moved most, and by how much (estimated minus reference)."""
        change = np.asarray(self.estimated) - np.asarray(self.reference)
        index = int(np.argmax(np.abs(change)))
        return index, float(change[index])

    def to_dict(self) -> dict[str, object]:
        index, change = self.largest_change
        return {
            "reference": self.reference,
            "estimated": self.estimated,
            "largest_change": {"class": index, "change": round(change, 4)},
        }


def shares(values: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of ``values`` (zeros when empty)."""
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_classes)[:n_classes]
    return counts / max(int(counts.sum()), 1)


def estimate_priors(
    reference_predicted: np.ndarray,
    reference_labels: np.ndarray,
    predicted: np.ndarray,
    n_classes: int,
) -> PriorEstimate:
    """The traffic's class priors implied by its predicted classes ``predicted``, through the
    confusion of the same model on a labelled reference; clipped at 0 and renormalised (a
    least-squares solve, so a class the reference never shows does not make it singular).

    >>> ref_y = np.array([0] * 50 + [1] * 50)
    >>> ref_p = np.array([0] * 45 + [1] * 5 + [1] * 45 + [0] * 5)  # 90 % right
    >>> est = estimate_priors(ref_p, ref_y, np.array([0] * 82 + [1] * 18), 2)
    >>> [round(p, 2) for p in est.estimated], est.reference
    ([0.9, 0.1], [0.5, 0.5])
    """
    ref_y = np.asarray(reference_labels, dtype=np.int64)
    ref_p = np.asarray(reference_predicted, dtype=np.int64)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (ref_p, ref_y), 1.0)
    totals = confusion.sum(axis=0)
    confusion = np.divide(confusion, totals, out=np.eye(n_classes), where=totals > 0)
    solved, *_ = np.linalg.lstsq(confusion, shares(predicted, n_classes), rcond=None)
    solved = np.clip(solved, 0.0, None)
    estimated = solved / solved.sum() if solved.sum() > 0 else shares(predicted, n_classes)
    return PriorEstimate(
        reference=[round(float(p), 4) for p in shares(ref_y, n_classes)],
        estimated=[round(float(p), 4) for p in estimated],
    )
