"""The adaptive update policy: keep training candidates until every affected group is back.

An adaptation opens on drift of any kind, or when a group's prequential accuracy falls below
its baseline: Fisher's one-sided exact test of the window's counts against the group's
pooled counts over its baseline windows, Bonferroni over the groups, and a fall of more than
the margin. The baseline windows are the first quiet windows since the last adaptation
closed (or since the stream began), so a slow drift is compared with where it started.
While it is open every window trains a candidate. It closes on the first window where
every group it waits for is measurably back: over its latest ``adapt_baseline_windows``
windows, the one-sided lower confidence bound (Wilson, at
``adapt_close_confidence``) of its accuracy is within ``adapt_margin`` of its baseline (so a
group several points behind, which one window's ~100 samples cannot tell from its baseline,
keeps the adaptation open). One still measurably behind after ``adapt_patience`` windows
raises ``fairness.gap`` once, naming its groups, and stays open. The state lives in each
window's summary, so a restarted learner carries on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import binomtest, fisher_exact
from sqlalchemy import select

from service.config import Settings
from service.store.engine import Store
from service.store.schema import Stream, Window

Counts = dict[str, tuple[int, int]]  # group -> (correct, n) of the champion on one window


@dataclass(frozen=True)
class AdaptSettings:
    """The policy's thresholds (fields of :class:`~service.config.Settings` of the same name)."""

    margin: float = 0.03
    alpha: float = 0.01
    patience: int = 6
    baseline_windows: int = 3
    close_confidence: float = 0.8

    @classmethod
    def from_settings(cls, settings: Settings) -> AdaptSettings:
        return cls(
            margin=settings.adapt_margin,
            alpha=settings.adapt_alpha,
            patience=settings.adapt_patience,
            baseline_windows=settings.adapt_baseline_windows,
            close_confidence=settings.adapt_close_confidence,
        )


@dataclass(frozen=True)
class Adaptation:
    """One adaptation: the groups it waits for, their baselines and how far they are."""

    opened: int
    groups: list[str]
    baseline: dict[str, float]
    reason: str
    baseline_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    windows: int = 0  # windows trained while open
    closed: int | None = None
    final: dict[str, float] = field(default_factory=dict)  # accuracy on the latest window
    behind_alerted: bool = False
    recent: list[Counts] = field(default_factory=list)  # the latest windows' counts, oldest first

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Adaptation | None:
        if not data:
            return None
        recent = [{g: (int(k), int(n)) for g, (k, n) in c.items()} for c in data.get("recent", [])]
        return cls(**{**data, "recent": recent})


@dataclass(frozen=True)
class Step:
    """What the policy made of one window: the adaptation now, and whether it just fell behind."""

    adaptation: Adaptation | None
    fell_behind: bool = False
    behind: dict[str, float] = field(default_factory=dict)  # group -> accuracy, recent windows

    @property
    def trains(self) -> bool:
        """Whether this window trains a candidate: an adaptation is open after it."""
        return self.adaptation is not None and self.adaptation.is_open


def window_counts(correct: np.ndarray, groups: np.ndarray) -> Counts:
    """The champion's (correct, n) per group on one window.

    >>> window_counts(np.array([True, False, True]), np.array(["A", "A", "B"]))
    {'A': (1, 2), 'B': (1, 1)}
    """
    names = np.asarray([str(g) for g in groups], dtype=object)
    return {
        str(g): (int(correct[names == g].sum()), int((names == g).sum()))
        for g in sorted(set(names.tolist()))
    }


def pooled(history: Iterable[Counts]) -> Counts:
    """Counts of several windows added up per group."""
    total: dict[str, tuple[int, int]] = {}
    for counts in history:
        for g, (k, n) in counts.items():
            k0, n0 = total.get(g, (0, 0))
            total[g] = (k0 + k, n0 + n)
    return total


def _accuracy(counts: Counts) -> dict[str, float]:
    return {g: round(k / n, 4) for g, (k, n) in counts.items() if n}


def fallen_groups(baseline: Counts, now: Counts, s: AdaptSettings) -> list[str]:
    """Groups whose accuracy now is below their baseline by more than the margin, beyond
    chance (Fisher's one-sided exact test, at ``alpha`` over the groups tested: the baseline's
    own size counts, so a baseline of a few samples cannot open an adaptation by itself)."""
    tested = [g for g in now if baseline.get(g, (0, 0))[1] and now[g][1]]
    fallen = []
    for g in tested:
        k0, n0 = baseline[g]
        k, n = now[g]
        if k / n < k0 / n0 - s.margin:
            _, p = fisher_exact([[k0, n0 - k0], [k, n - k]], alternative="greater")
            if p < s.alpha / len(tested):
                fallen.append(g)
    return fallen


def back_groups(baseline: Counts, recent: Counts, s: AdaptSettings) -> list[str]:
    """Groups measurably back: the one-sided Wilson lower bound (at ``close_confidence``) of
    their ``recent`` accuracy is within the margin of their baseline accuracy.

    >>> back_groups({"B": (264, 300)}, {"B": (270, 300)}, AdaptSettings())
    ['B']
    >>> back_groups({"B": (264, 300)}, {"B": (258, 300)}, AdaptSettings())
    []
    """
    back = []
    for g, (k, n) in recent.items():
        k0, n0 = baseline.get(g, (0, 0))
        if not n or not n0:
            continue
        low = binomtest(k, n).proportion_ci(2 * s.close_confidence - 1, method="wilson").low
        if low >= k0 / n0 - s.margin:
            back.append(g)
    return sorted(back)


def step(
    previous: Adaptation | None,
    window: int,
    now: Counts,
    history: list[Counts],
    drifted_groups: set[str],
    drifted: bool,
    s: AdaptSettings,
    first_sign: str = "",
) -> Step:
    """The policy on one window: carry an open adaptation on (closing it when no group it
    waits for is still measurably behind), or open one on drift or a fall below baseline.
    ``history`` holds the counts of the windows before that were not under an adaptation,
    newest last; ``first_sign`` (a traffic incident) leads the reasons of one it opens."""
    accuracy = _accuracy(now)
    if previous is not None and previous.is_open:
        final = {g: accuracy[g] for g in previous.groups if g in accuracy}
        counts = {g: (int(k), int(n)) for g, (k, n) in previous.baseline_counts.items()}
        watched = {g: now[g] for g in previous.groups if now.get(g, (0, 0))[1]}
        recent = [*previous.recent, watched][-s.baseline_windows :]
        latest = pooled(recent)
        # Back only with a full run of recent windows, every watched group in it.
        full = len(recent) == s.baseline_windows and all(g in latest for g in previous.groups)
        if full and back_groups(counts, latest, s) == sorted(previous.groups):
            return Step(replace(previous, closed=window, final=final, recent=recent))
        carried = replace(previous, windows=previous.windows + 1, final=final, recent=recent)
        fallen = fallen_groups(counts, latest, s)
        if carried.windows >= s.patience and not carried.behind_alerted and fallen:
            return Step(
                replace(carried, behind_alerted=True),
                True,
                {g: _accuracy(latest)[g] for g in fallen},
            )
        return Step(carried)
    baseline = pooled(history[-s.baseline_windows :])
    fallen = fallen_groups(baseline, now, s)
    if not drifted and not fallen:
        return Step(None)
    named = (set(drifted_groups) | set(fallen)) or set(now)
    groups = sorted(g for g in named if baseline.get(g, (0, 0))[1])
    if not groups:  # no window before to compare with: nothing to wait for
        return Step(None)
    reasons = [first_sign] if first_sign else []
    reasons += [f"drift in {', '.join(sorted(drifted_groups)) or 'all groups'}"] if drifted else []
    reasons += [f"accuracy of {', '.join(fallen)} below baseline"] if fallen else []
    base = _accuracy({g: baseline[g] for g in groups})
    return Step(
        Adaptation(
            opened=window,
            groups=groups,
            baseline=base,
            baseline_counts={g: baseline[g] for g in groups},
            reason="; ".join(reasons),
            windows=1,
            final={g: accuracy[g] for g in groups if g in accuracy},
            recent=[{g: now[g] for g in groups if now.get(g, (0, 0))[1]}],
        )
    )


HISTORY_SCAN = 200  # processed windows read back at most to find a baseline


def adaptation_history(
    store: Store, stream: Stream, seq: int, baseline_windows: int
) -> tuple[dict[str, Any], list[Counts]]:
    """The summary of the window before ``seq`` (``{}`` if none), and the counts of its
    baseline windows (:func:`baseline_history`) among the processed windows before it."""
    with store.session() as session:
        summaries = session.scalars(
            select(Window.summary)
            .where(Window.stream_id == stream.id, Window.seq < seq, Window.state == "processed")
            .order_by(Window.seq.desc())
            .limit(HISTORY_SCAN)
        ).all()
    previous = (summaries[0] or {}) if summaries else {}
    return previous, baseline_history([s or {} for s in summaries], baseline_windows)


def baseline_history(summaries: list[dict[str, Any]], baseline_windows: int) -> list[Counts]:
    """The counts of the baseline windows, oldest first, from window summaries newest first:
    the first ``baseline_windows`` quiet windows (neither drifted nor under an open
    adaptation) since the last adaptation closed, or since the stream began. The baseline
    is anchored there, so a group that drifts slowly is compared with where it started,
    not with its own recent past; with fewer quiet windows since, the newest quiet windows
    before make it up."""
    since: list[Counts] = []  # quiet windows since the last close, newest first
    earlier: list[Counts] = []  # quiet windows before it, newest first
    closed = False
    for summary in summaries:
        adaptation = Adaptation.from_dict(summary.get("adaptation"))
        counts = {
            g: (int(k), int(n)) for g, (k, n) in summary.get("prequential_counts", {}).items()
        }
        drifted = any(summary.get("drift", {}).values())
        if counts and not drifted and (adaptation is None or not adaptation.is_open):
            (earlier if closed else since).append(counts)
        closed = closed or (adaptation is not None and adaptation.closed == summary.get("window"))
        if closed and len(since) + len(earlier) >= baseline_windows:
            break
    if len(since) >= baseline_windows:
        return since[::-1][:baseline_windows]
    return (since + earlier)[:baseline_windows][::-1]
