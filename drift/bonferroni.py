"""One window tested as a whole and per group, at a Bonferroni-corrected level.

Every grouped test (the covariate detectors of :mod:`drift.base`, the chi-square of
:mod:`drift.label`) runs the same family: the overall test plus one test per group
with at least ``min_group_size`` samples on both sides, each at ``p_value`` divided by
the number of tests run. Plain numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from drift.result import GroupVerdict

TOO_FEW = "too few samples"

Score = Callable[[str | None], tuple[float, float]]
"""The statistic and p-value of one group's rows (``None``: all rows) against the reference."""


def bonferroni_threshold(p_value: float, n_tests: int) -> float:
    """The per-test level that keeps the family-wise error at ``p_value`` over ``n_tests`` tests.

    >>> bonferroni_threshold(0.01, 4)
    0.0025
    """
    return p_value / max(n_tests, 1)


@dataclass(frozen=True)
class GroupedTest:
    """The overall test and the per-group verdicts of one window, at one corrected level."""

    threshold: float
    statistic: float
    p_value: float
    per_group: dict[str, GroupVerdict]

    @property
    def is_drift(self) -> bool:
        """True when the overall test or any group's test crossed the threshold."""
        return self.p_value < self.threshold or any(v.is_drift for v in self.per_group.values())


def grouped_test(
    groups_ref: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    score: Score,
    *,
    p_value: float,
    min_group_size: int,
) -> GroupedTest:
    """Score the whole window, then each group big enough on both sides, in sorted order.

    Groups seen on either side but too small are reported untested (``TOO_FEW``).

    >>> def score(group):  # a toy test that finds drift in group "b" only
    ...     return 0.0, 0.0 if group == "b" else 1.0
    >>> t = grouped_test(["a"] * 30 + ["b"] * 30, ["a"] * 30 + ["b"] * 20 + ["c"], score,
    ...                  p_value=0.03, min_group_size=20)
    >>> t.threshold, t.is_drift, t.per_group["b"].is_drift, t.per_group["c"].note
    (0.01, True, True, 'too few samples')
    """
    ref_g, win_g = np.asarray(groups_ref), np.asarray(groups)
    names = sorted(set(ref_g.tolist()) | set(win_g.tolist()))
    testable = [
        g
        for g in names
        if (ref_g == g).sum() >= min_group_size and (win_g == g).sum() >= min_group_size
    ]
    threshold = bonferroni_threshold(p_value, 1 + len(testable))
    statistic, p_all = score(None)
    per_group: dict[str, GroupVerdict] = {}
    for g in names:
        n_ref, n_win = int((ref_g == g).sum()), int((win_g == g).sum())
        if g not in testable:
            per_group[g] = GroupVerdict(False, None, None, n_ref, n_win, tested=False, note=TOO_FEW)
            continue
        stat_g, p_g = score(g)
        per_group[g] = GroupVerdict(bool(p_g < threshold), float(stat_g), float(p_g), n_ref, n_win)
    return GroupedTest(threshold, float(statistic), float(p_all), per_group)
