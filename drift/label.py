"""Label (prior probability) shift: a chi-square test on label counts, overall and per group.

The groups and their Bonferroni correction are those of :func:`drift.bonferroni.grouped_test`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2_contingency

from drift.bonferroni import grouped_test
from drift.result import DriftResult


def _chi_square(ref: np.ndarray, win: np.ndarray, n_classes: int) -> tuple[float, float]:
    table = np.stack([np.bincount(ref, minlength=n_classes), np.bincount(win, minlength=n_classes)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or min(len(ref), len(win)) == 0:
        return 0.0, 1.0
    result = chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def label_shift(
    ref_labels: Sequence[int],
    ref_groups: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[str],
    *,
    n_classes: int,
    p_value: float = 0.01,
    min_group_size: int = 20,
) -> DriftResult:
    """Chi-square test of the window's label counts against the reference's.

    >>> ref = [0, 1] * 100
    >>> r = label_shift(ref, ["a"] * 200, [0] * 90 + [1] * 10, ["a"] * 100, n_classes=2)
    >>> r.is_drift, r.p_value < 1e-6
    (True, True)
    >>> label_shift(ref, ["a"] * 200, [0, 1] * 50, ["a"] * 100, n_classes=2).is_drift
    False
    """
    started = time.perf_counter()
    ref_y, win_y = np.asarray(ref_labels, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    ref_g, win_g = np.asarray(ref_groups), np.asarray(groups)

    def score(group: str | None) -> tuple[float, float]:
        if group is None:
            return _chi_square(ref_y, win_y, n_classes)
        return _chi_square(ref_y[ref_g == group], win_y[win_g == group], n_classes)

    tested = grouped_test(ref_g, win_g, score, p_value=p_value, min_group_size=min_group_size)
    return DriftResult(
        kind="label",
        detector="chi2",
        is_drift=tested.is_drift,
        statistic=tested.statistic,
        p_value=tested.p_value,
        threshold=tested.threshold,
        feature_space="labels",
        n_reference=len(ref_y),
        n_window=len(win_y),
        per_group=tested.per_group,
        seconds=time.perf_counter() - started,
    )
