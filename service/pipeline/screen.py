"""The label screen: which of a window's labels are likely wrong, before the window trains.

The champion has not trained on the window, so its probabilities there are out of sample,
as confident learning (cleanlab, :mod:`learners.label_quality`) requires. cleanlab also
flags the champion's own confident mistakes, so flags alone would quarantine the hard
examples a model should learn from. A group's flags are therefore quarantined only when
its flagged share is beyond the stream's running rate for that group: the share cleanlab
flags, under the same champion, among the group's samples in the drift reference (held-out
samples of the latest windows, quarantine left out). Fisher's exact test compares the two
shares (one-sided, Bonferroni-corrected over the groups screened: the reference is a sample
too), and the window's must be higher by more than a margin. Such a group is *suspect* (a
``labels.suspect`` incident).

The champion's probabilities only speak for inputs it knows, so a group is not screened
when its inputs drifted in this window or its era (its latest shift) began after the last
window the champion learned: on a new domain the champion's errors are not label noise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from learners.label_quality import find_label_issues

NOT_SCREENED_DRIFT = "its inputs drifted in this window"
NOT_SCREENED_NEW_ERA = "its inputs changed after the champion's last trained window"
NOT_SCREENED_FEW = "fewer than {n} samples"
MIN_CLASS_REFERENCE = 10  # reference samples of a class before its labels are judged
NOT_SCREENED_NO_REFERENCE = "fewer than {n} reference samples to learn its usual rate from"


@dataclass(frozen=True)
class GroupScreen:
    """One group's screen: flagged of n, its reference's flagged share, the test."""

    n: int
    flagged: int = 0
    expected: float | None = None  # the flagged share of its reference samples
    p_value: float | None = None
    suspect: bool = False
    reference: list[int] | None = None  # [flagged, n] among its reference samples
    skipped: str | None = None  # why the group was not screened


@dataclass(frozen=True)
class Screen:
    """The window's screen: per group, and which samples (window order) are quarantined."""

    groups: dict[str, GroupScreen]
    threshold: float
    quarantined: np.ndarray  # bool (N,)
    scores: np.ndarray  # float (N,): cleanlab's self-confidence, 1.0 where not screened
    believed: np.ndarray  # int64 (N,): the class the champion believes
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def suspect_groups(self) -> list[str]:
        return sorted(g for g, s in self.groups.items() if s.suspect)

    def to_dict(self) -> dict[str, Any]:
        """The window summary's ``screen``: per group counts, expectations and verdicts."""
        return {
            "threshold": self.threshold,
            "quarantined": int(self.quarantined.sum()),
            "flagged": int(self.candidates.sum()),
            "groups": {g: asdict(s) for g, s in sorted(self.groups.items())},
        }


def judged_classes(reference_labels: np.ndarray) -> set[int]:
    """The classes whose labels the screen judges: those of which the reference holds at
    least ``MIN_CLASS_REFERENCE`` samples. The champion has not shown what a class looks
    like before (one just added to the stream): its disagreement there is no evidence.

    >>> sorted(judged_classes(np.array([0] * 12 + [1] * 3)))
    [0]
    """
    values, counts = np.unique(np.asarray(reference_labels, dtype=np.int64), return_counts=True)
    return {int(v) for v, c in zip(values, counts, strict=True) if c >= MIN_CLASS_REFERENCE}


def reference_flags(
    labels: np.ndarray, probabilities: np.ndarray, groups: np.ndarray, min_n: int
) -> dict[str, tuple[int, int]]:
    """Each group's running rate: cleanlab's flags, under the same champion, among its
    reference samples of the judged classes (:func:`judged_classes`), as (flagged, n); only
    groups with at least ``min_n`` of them."""
    names = np.asarray([str(g) for g in groups])
    labels = np.asarray(labels, dtype=np.int64)
    judged = np.isin(labels, list(judged_classes(labels)))
    flagged = find_label_issues(labels, np.asarray(probabilities)).flagged
    counts = {}
    for group in sorted(set(names.tolist())):
        members = (names == group) & judged
        if members.sum() >= min_n:
            counts[group] = (int(flagged[members].sum()), int(members.sum()))
    return counts


def screen_labels(
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: np.ndarray,
    *,
    skip: Mapping[str, str],
    reference: Mapping[str, tuple[int, int]],
    alpha: float,
    margin: float,
    min_group_size: int,
    judged_classes: Collection[int] | None = None,
) -> Screen:
    """Screen a window's ``labels`` under the champion's out-of-sample ``probabilities``.

    ``skip`` names groups not to screen, with the reason; ``reference`` is each group's
    running rate as (flagged, n) (:func:`reference_flags`): a group it lacks is not
    screened; ``judged_classes`` (default: all) are the classes whose labels are judged, the
    others (a class the champion has barely seen) neither flagged nor counted. A group is
    suspect when Fisher's exact test finds its flagged share higher
    than its reference's (one-sided, at ``alpha`` over the groups screened) and higher by
    more than ``margin``: both counts are samples, so a small reference asks for more.
    """
    names = np.asarray([str(g) for g in groups])
    n = len(labels)
    believed = np.asarray(probabilities).argmax(axis=1).astype(np.int64) if n else np.zeros(0)
    scores = np.ones(n)
    candidates = np.zeros(n, dtype=bool)
    verdicts: dict[str, GroupScreen] = {}
    screened: list[str] = []
    for group in sorted(set(names.tolist())):
        members = int((names == group).sum())
        if group in skip:
            verdicts[group] = GroupScreen(members, skipped=skip[group])
        elif members < min_group_size:
            verdicts[group] = GroupScreen(
                members, skipped=NOT_SCREENED_FEW.format(n=min_group_size)
            )
        elif group not in reference:
            why = NOT_SCREENED_NO_REFERENCE.format(n=min_group_size)
            verdicts[group] = GroupScreen(members, skipped=why)
        else:
            screened.append(group)
    threshold = alpha / max(len(screened), 1)
    judged = (
        np.ones(n, dtype=bool)
        if judged_classes is None
        else np.isin(np.asarray(labels), list(judged_classes))
    )
    mask = np.isin(names, screened) & judged
    if mask.any():
        issues = find_label_issues(np.asarray(labels)[mask], np.asarray(probabilities)[mask])
        candidates[mask] = issues.flagged
        scores[mask] = issues.scores
    quarantined = np.zeros(n, dtype=bool)
    for group in screened:
        members = (names == group) & judged
        k, m = int(candidates[members].sum()), int(members.sum())
        k0, n0 = reference[group]
        if m == 0:
            verdicts[group] = GroupScreen(0, skipped=NOT_SCREENED_FEW.format(n=min_group_size))
            continue
        table = [[k, m - k], [k0, n0 - k0]]
        p_value = float(fisher_exact(table, alternative="greater").pvalue)
        suspect = p_value < threshold and k / m - k0 / n0 > margin
        if suspect:
            quarantined |= members & candidates
        verdicts[group] = GroupScreen(m, k, round(k0 / n0, 4), p_value, suspect, [k0, n0])
    return Screen(verdicts, threshold, quarantined, scores, believed, candidates)
