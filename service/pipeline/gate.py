"""The gate: a candidate replaces the champion only if no group and no window gets worse.

Champion and candidate are scored on the same holdout samples. The slices are each group
on its era (all its windows for a group that never shifted; for a shifted group only the
windows since its latest shift, :mod:`service.pipeline.eras`), each group on the recent
windows of its era (``recent_windows``: a drop on the present is not diluted by the past),
and each window on the samples of groups in their era. A shifted group's images from
before its shift are reported, never decisive: the candidate is not held to a domain that
is gone, while every unshifted group is still protected on all its windows. On each slice
an exact one-sided sign test on the discordant pairs (McNemar's exact test: samples
exactly one of the two models gets right) asks "is the candidate worse?". The slices big
enough to decide form one Holm family at ``1 - confidence``, so a candidate that is no
worse anywhere is rejected with probability at most ``1 - confidence`` however many slices
there are (Holm holds under any dependence). A slice decides when it has at least
``min_group_size`` samples and its minimum detectable drop (the smallest accuracy loss its
test could see at the family's first Holm level) is at most twice the tolerance; smaller
slices are reported, never decisive. A deciding slice fails when its test rejects *and*
the candidate is worse by more than ``tolerance``. Each comparison also reports a
Bonferroni interval (normal approximation, over the same family). The best-to-worst group
gap may not widen by more than ``max_gap_increase`` through a loss of the candidate's
worst group, tested as one more hypothesis; such a failure names that group. The chain
guard holds the candidate, on each deciding group slice, to the best of the recent earlier
champions there (``chain_tolerance``, a Holm family of its own), so that losses each within
the tolerance cannot add up across promotions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm
from torch import nn

from learners.evaluation import GroupMetrics, evaluate_by_group, predict
from learners.models import to_float
from service.config import Settings
from service.pipeline.eras import in_era
from service.pipeline.holdout import GateHoldout


def _default(name: str) -> Any:
    """The default of one of :class:`~service.config.Settings`' fields: the one source."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class GateSettings:
    """The gate's thresholds; each defaults to its field of :class:`~service.config.Settings`."""

    tolerance: float = _default("gate_tolerance")
    min_group_size: int = _default("min_group_size")
    max_gap_increase: float = _default("max_gap_increase")
    confidence: float = _default("gate_confidence")
    recent_windows: int = _default("gate_recent_windows")
    chain_tolerance: float = _default("gate_chain_tolerance")

    @classmethod
    def from_settings(cls, settings: Settings) -> GateSettings:
        """The thresholds a service is configured with."""
        return cls(
            tolerance=settings.gate_tolerance,
            min_group_size=settings.min_group_size,
            max_gap_increase=settings.max_gap_increase,
            confidence=settings.gate_confidence,
            recent_windows=settings.gate_recent_windows,
            chain_tolerance=settings.gate_chain_tolerance,
        )


@dataclass(frozen=True)
class Comparison:
    """Champion against candidate on one slice of the holdout."""

    subject: str
    n: int
    champion: float
    candidate: float
    difference: float
    interval: tuple[float, float]
    p_value: float | None  # one-sided exact: the candidate is no worse
    verdict: str  # "pass", "fail" or "not decisive"
    reason: str
    min_detectable_drop: float = 1.0  # at the family's first Holm level
    group: str | None = None  # the group of a group's slice


@dataclass(frozen=True)
class GateReport:
    passed: bool
    n: int
    groups: list[Comparison]
    windows: list[Comparison]
    champion_gap: float
    candidate_gap: float
    reasons: list[str] = field(default_factory=list)
    gap_failed: bool = False
    worst_group: str | None = None
    metrics: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    recent: list[Comparison] = field(default_factory=list)
    before_shift: list[Comparison] = field(default_factory=list)
    chain: list[Comparison] = field(default_factory=list)
    # Classes the champion does not know yet (added to the stream): the candidate's accuracy
    # and the count on each, by name; every other figure leaves their samples out.
    new_classes: dict[str, dict[str, float | int]] = field(default_factory=dict)

    @property
    def regressed(self) -> bool:
        """True when some slice got worse beyond chance (not only the gap)."""
        return any(
            c.verdict == "fail" for c in [*self.groups, *self.recent, *self.windows, *self.chain]
        )

    @property
    def failed_windows(self) -> list[str]:
        """Windows (as ``"window <seq>"``) on which the candidate got worse beyond chance."""
        return [c.subject for c in self.windows if c.verdict == "fail"]

    @property
    def failed_groups(self) -> list[str]:
        """Groups that got worse beyond chance, or else the worst group when the gap failed."""
        slices = [*self.groups, *self.recent, *self.chain]
        failed = list(dict.fromkeys(c.group for c in slices if c.verdict == "fail" and c.group))
        if not failed and self.gap_failed and self.worst_group is not None:
            return [self.worst_group]
        return failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paired_interval(diff: np.ndarray, z: float) -> tuple[float, float]:
    if len(diff) < 2:
        return (-1.0, 1.0)
    se = float(diff.std(ddof=1)) / np.sqrt(len(diff))
    mean = float(diff.mean())
    return (mean - z * se, mean + z * se)


def _one_sided_p(champ_ok: np.ndarray, cand_ok: np.ndarray) -> float:
    """Exact p-value of "the candidate is no worse": of the discordant pairs, at least as
    many go against the candidate as observed, under a fair coin (McNemar's exact test).

    >>> ok, bad = np.ones(10, bool), np.zeros(10, bool)
    >>> round(_one_sided_p(ok, bad), 6), _one_sided_p(ok, ok)
    (0.000977, 1.0)
    """
    against = int((champ_ok & ~cand_ok).sum())
    discordant = against + int((cand_ok & ~champ_ok).sum())
    if discordant == 0:
        return 1.0
    return float(binomtest(against, discordant, 0.5, alternative="greater").pvalue)


def min_detectable_drop(n: int, level: float) -> float:
    """The smallest accuracy drop an exact sign test on ``n`` paired samples can find at
    ``level``: ``k / n`` for the fewest discordant pairs ``k``, all against the candidate,
    whose p-value ``0.5 ** k`` is at most ``level``.

    >>> min_detectable_drop(200, 0.05 / 6)
    0.035
    """
    if n == 0:
        return 1.0
    return min(1.0, math.ceil(round(math.log2(1.0 / level), 9)) / n)


def _holm(p_values: dict[Hashable, float], alpha: float) -> set[Hashable]:
    """Names whose hypothesis Holm's step-down procedure rejects at ``alpha``."""
    rejected: set[Hashable] = set()
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    for rank, (name, p) in enumerate(ordered):
        if p > alpha / (len(ordered) - rank):
            break
        rejected.add(name)
    return rejected


def _compare(
    subject: str,
    champ: np.ndarray,
    cand: np.ndarray,
    z: float,
    s: GateSettings,
    decision: bool | None,
    mde: float,
) -> Comparison:
    """One slice; ``decision`` is whether its test rejected, ``None`` when it does not decide."""
    diff = cand.astype(np.float64) - champ.astype(np.float64)
    low, high = _paired_interval(diff, z)
    delta = float(diff.mean()) if len(diff) else 0.0
    p_value = _one_sided_p(champ, cand)
    if decision is None:
        verdict, reason = "not decisive", _not_decisive(len(diff), mde, s)
    elif decision and delta < -s.tolerance:
        verdict = "fail"
        reason = (
            f"accuracy fell by {-delta:.3f} (more than the tolerance {s.tolerance}), "
            f"beyond chance (one-sided p={p_value:.2g}, Holm), interval [{low:.3f}, {high:.3f}]"
        )
    else:
        verdict = "pass"
        reason = f"difference {delta:+.3f} (p={p_value:.2g}), interval [{low:.3f}, {high:.3f}]"
    return Comparison(
        subject=subject,
        n=len(diff),
        champion=float(champ.mean()) if len(champ) else 0.0,
        candidate=float(cand.mean()) if len(cand) else 0.0,
        difference=delta,
        interval=(low, high),
        p_value=p_value,
        verdict=verdict,
        reason=reason,
        min_detectable_drop=mde,
    )


def _deciding(
    masks: dict[tuple[str, Any], np.ndarray], alpha: float, s: GateSettings
) -> tuple[list[tuple[str, Any]], dict[tuple[str, Any], float]]:
    """The slices that decide, and every slice's minimum detectable drop at the family's
    first Holm level: slices that cannot see twice the tolerance leave the family until
    every one left can, at the level of the family that is left."""
    sizes = {key: int(m.sum()) for key, m in masks.items()}
    deciding = [key for key, n in sizes.items() if n >= s.min_group_size]
    while True:
        level = alpha / max(1, len(deciding))
        able = [k for k in deciding if min_detectable_drop(sizes[k], level) <= 2.0 * s.tolerance]
        if able == deciding:
            break
        deciding = able
    return deciding, {key: min_detectable_drop(n, level) for key, n in sizes.items()}


def _not_decisive(n: int, mde: float, s: GateSettings) -> str:
    if n < s.min_group_size:
        return f"{n} samples, fewer than {s.min_group_size}"
    return (
        f"{n} samples: the smallest drop the test can see ({mde:.3f}) is over twice the "
        f"tolerance {s.tolerance}"
    )


def _window_subject(window: Any) -> str:
    """``"window 3"``: a window's name in reports (whole numbers without a decimal point)."""
    if isinstance(window, float) and window.is_integer():
        window = int(window)
    return f"window {window}"


def _finite(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """The metric table with NaN as ``None`` (JSON and the store cannot hold NaN)."""
    return {
        g: {k: (None if v != v else round(v, 4)) for k, v in m.items()} for g, m in table.items()
    }


Slice = tuple[str, Any]  # ("group" | "recent" | "before" | "window", name or window number)


def _slices(
    names: np.ndarray, windows: np.ndarray, eras: Mapping[str, int], recent: int
) -> tuple[dict[Slice, np.ndarray], dict[Slice, np.ndarray]]:
    """The slices that may decide and the slices only reported, each with its mask.

    Each group on its era (all of it for a group that never shifted), and on the recent
    windows of its era when that is fewer samples; each window on the samples in their
    group's era. A shifted group's images from before its shift are reported only.
    """
    current = int(windows.max()) if len(windows) else 0
    era = in_era(names, windows, eras)
    latest = windows >= current - recent + 1
    may: dict[Slice, np.ndarray] = {}
    reported: dict[Slice, np.ndarray] = {}
    for g in sorted(set(names.tolist())):
        mine = names == g
        may[("group", g)] = mine & era
        if (mine & era & latest).sum() < (mine & era).sum():
            may[("recent", g)] = mine & era & latest
        if (mine & ~era).any():
            reported[("before", g)] = mine & ~era
    for w in sorted(set(windows.tolist())):
        may[("window", w)] = (windows == w) & era
    return may, reported


def _subject(key: Slice) -> str:
    kind, name = key
    if kind == "window":
        return _window_subject(name)
    if kind == "recent":
        return f"{name} (recent windows)"
    if kind == "before":
        return f"{name} (before its shift)"
    return str(name)


def run_gate(
    y_true: np.ndarray,
    champion_pred: np.ndarray,
    candidate_pred: np.ndarray,
    groups: np.ndarray,
    windows: np.ndarray,
    settings: GateSettings,
    *,
    champion_proba: np.ndarray | None = None,
    candidate_proba: np.ndarray | None = None,
    eras: Mapping[str, int] | None = None,
    earlier: Mapping[int, np.ndarray] | None = None,
) -> GateReport:
    """Decide whether the candidate may replace the champion on this holdout.

    Accuracy decides; with class probabilities the report also carries precision, recall,
    F1 and AUC per group for both models. ``eras``: the window each shifted group's era
    began at; ``earlier``: the predictions of the recent champions before this one (the
    chain guard).
    """
    y_true, groups, windows = np.asarray(y_true), np.asarray(groups), np.asarray(windows)
    champ_ok = np.asarray(champion_pred) == y_true
    cand_ok = np.asarray(candidate_pred) == y_true
    names = np.array([str(g) for g in groups], dtype=object)
    era = in_era(names, windows, eras or {})
    # Group metrics (and the gap) on each group's era: a shifted group's old images are gone.
    champ_metrics = evaluate_by_group(
        y_true[era], np.asarray(champion_pred)[era], names[era], _rows(champion_proba, era)
    )
    cand_metrics = evaluate_by_group(
        y_true[era], np.asarray(candidate_pred)[era], names[era], _rows(candidate_proba, era)
    )
    masks, reported = _slices(names, windows, eras or {}, settings.recent_windows)
    alpha = 1.0 - settings.confidence
    deciding, mde = _deciding(masks, alpha, settings)
    z = float(norm.ppf(1.0 - alpha / max(1, len(deciding))))
    rejected = _holm(
        {key: _one_sided_p(champ_ok[masks[key]], cand_ok[masks[key]]) for key in deciding},
        alpha,
    )

    mde |= {
        key: min_detectable_drop(int(m.sum()), alpha / max(1, len(deciding)))
        for key, m in reported.items()
    }

    def compare(key: Slice, m: np.ndarray, decision: bool | None) -> Comparison:
        compared = _compare(_subject(key), champ_ok[m], cand_ok[m], z, settings, decision, mde[key])
        return replace(compared, group=None if key[0] == "window" else str(key[1]))

    compared = {
        key: compare(key, m, (key in rejected) if key in deciding else None)
        for key, m in masks.items()
    }
    before_shift = [compare(key, m, None) for key, m in reported.items()]
    chain = _chain(y_true, cand_ok, masks, deciding, earlier or {}, alpha, z, mde, settings)
    comparisons = [c for (kind, _), c in compared.items() if kind == "group"]
    recent = [c for (kind, _), c in compared.items() if kind == "recent"]
    by_window = [c for (kind, _), c in compared.items() if kind == "window"]
    group_names = [g for kind, g in deciding if kind == "group"]

    def gap(metrics: GroupMetrics) -> float:
        accs = [metrics.by_group[g]["accuracy"] for g in group_names]
        return float(max(accs) - min(accs)) if len(accs) >= 2 else 0.0

    champion_gap, candidate_gap = gap(champ_metrics), gap(cand_metrics)
    worst = min(group_names, key=lambda g: cand_metrics.by_group[g]["accuracy"], default=None)
    reasons = [
        f"group {c.subject}: {c.reason}" for c in [*comparisons, *recent] if c.verdict == "fail"
    ]
    reasons += [f"{c.subject}: {c.reason}" for c in by_window if c.verdict == "fail"]
    reasons += [f"chain guard, group {c.subject}: {c.reason}" for c in chain if c.verdict == "fail"]
    worst_p = 1.0
    if worst is not None:
        worst_mask = masks[("group", worst)]
        worst_p = _one_sided_p(champ_ok[worst_mask], cand_ok[worst_mask])
    # The gap fails only when it widens *because the worst group got worse* beyond chance
    # (one more test, at the family's strictest level): a Pareto improvement never fails.
    gap_failed = candidate_gap - champion_gap > settings.max_gap_increase and worst_p <= alpha / (
        len(deciding) + 1
    )
    if gap_failed:
        reasons.append(
            f"best-to-worst group gap widened from {champion_gap:.3f} to {candidate_gap:.3f} "
            f"(more than {settings.max_gap_increase}) and the worst group {worst} got worse "
            f"(one-sided p={worst_p:.2g})"
        )
    return GateReport(
        passed=not reasons,
        n=len(y_true),
        groups=comparisons,
        windows=by_window,
        champion_gap=champion_gap,
        candidate_gap=candidate_gap,
        reasons=reasons,
        gap_failed=gap_failed,
        worst_group=worst,
        metrics={
            "champion": _finite(champ_metrics.by_group),
            "candidate": _finite(cand_metrics.by_group),
        },
        recent=recent,
        before_shift=before_shift,
        chain=chain,
    )


def _rows(proba: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if proba is None else np.asarray(proba)[mask]


def _chain(
    y_true: np.ndarray,
    cand_ok: np.ndarray,
    masks: dict[Slice, np.ndarray],
    deciding: list[Slice],
    earlier: Mapping[int, np.ndarray],
    alpha: float,
    z: float,
    mde: dict[Slice, float],
    s: GateSettings,
) -> list[Comparison]:
    """The chain guard: on each deciding group slice, the candidate against the best of the
    earlier recent champions there, failing beyond chance by more than ``chain_tolerance``
    (a Holm family of its own), so that losses within the tolerance cannot add up across
    promotions."""
    oks = {v: np.asarray(pred) == y_true for v, pred in earlier.items()}
    best = {
        key: max(oks, key=lambda v: (float(oks[v][masks[key]].mean()), v))
        for key in deciding
        if key[0] == "group" and oks
    }
    rejected = _holm(
        {key: _one_sided_p(oks[v][masks[key]], cand_ok[masks[key]]) for key, v in best.items()},
        alpha,
    )
    chained = replace(s, tolerance=s.chain_tolerance)
    return [
        replace(
            _compare(
                f"{key[1]} against version {v}",
                oks[v][masks[key]],
                cand_ok[masks[key]],
                z,
                chained,
                key in rejected,
                mde[key],
            ),
            group=str(key[1]),
        )
        for key, v in best.items()
    ]


def judge(
    champion: nn.Module,
    candidate: nn.Module,
    holdout: GateHoldout,
    settings: Settings,
    *,
    eras: Mapping[str, int] | None = None,
    earlier: Mapping[int, nn.Module] | None = None,
    classes: Sequence[str] | None = None,
) -> GateReport:
    """Score champion, candidate and the earlier recent champions on the gate's holdout and
    run the gate on their predictions. Samples of classes the champion has no output for
    (classes added to the stream) are left out of the comparison, which they would only
    flatter, and reported apart in ``new_classes``."""
    x = to_float(holdout.batch.x)
    champion_pred, champion_proba = predict(champion, x)
    candidate_pred, candidate_proba = predict(candidate, x)
    y = np.asarray(holdout.batch.y)
    known = y < champion_proba.shape[1]
    earlier_pred = {v: predict(m, x)[0].numpy() for v, m in (earlier or {}).items()}
    report = run_gate(
        y[known],
        champion_pred.numpy()[known],
        candidate_pred.numpy()[known],
        np.asarray(holdout.batch.groups)[known],
        np.asarray(holdout.window_numbers)[known],
        GateSettings.from_settings(settings),
        champion_proba=champion_proba.numpy()[known],
        candidate_proba=candidate_proba.numpy()[known][:, : champion_proba.shape[1]],
        eras=eras,
        earlier={v: pred[known] for v, pred in earlier_pred.items()},
    )
    if known.all():
        return report
    names = list(classes) if classes is not None else [str(i) for i in range(int(y.max()) + 1)]
    cand = candidate_pred.numpy()
    new = {
        names[c]: {
            "n": int((y == c).sum()),
            "candidate_accuracy": float((cand[y == c] == c).mean()),
        }
        for c in sorted({int(c) for c in y[~known]})
    }
    return replace(report, new_classes=new)
