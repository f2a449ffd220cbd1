"""The adaptive policy on hand-made counts: opening, carrying on, closing, falling behind."""

from __future__ import annotations

from service.pipeline.adaptation import (
    Adaptation,
    AdaptSettings,
    baseline_history,
    fallen_groups,
    pooled,
    step,
)

S = AdaptSettings()
BEFORE = [{"A": (90, 100), "B": (88, 100)}] * 3  # A 0.90, B 0.88 before the change


def test_a_fall_below_baseline_opens_an_adaptation_that_closes_when_the_group_is_back() -> None:
    fell = step(None, 6, {"A": (91, 100), "B": (55, 100)}, BEFORE, set(), False, S)
    assert fell.trains and fell.adaptation is not None
    opened = fell.adaptation
    assert (opened.opened, opened.groups, opened.baseline) == (6, ["B"], {"B": 0.88})
    assert opened.reason == "accuracy of B below baseline"
    # Still behind: 0.70 against 0.88 of 300 (Fisher p = 5e-5); it carries on and trains again.
    behind = step(opened, 7, {"A": (90, 100), "B": (70, 100)}, BEFORE, set(), False, S)
    assert behind.trains and behind.adaptation is not None
    assert (behind.adaptation.windows, behind.adaptation.final) == (2, {"B": 0.7})
    # Back on three windows in a row: 0.90 of 300, whose lower bound 0.88 is within the margin
    # of 0.88; closed, no training on this window.
    adaptation = behind.adaptation
    for window in (8, 9, 10):
        carried = step(
            adaptation, window, {"A": (90, 100), "B": (90, 100)}, BEFORE, set(), False, S
        )
        assert carried.adaptation is not None
        adaptation = carried.adaptation
    assert [carried.trains, adaptation.closed, adaptation.final] == [False, 10, {"B": 0.9}]


def test_a_group_a_few_points_behind_keeps_it_open_without_an_alarm() -> None:
    # 0.84 against 0.88: not measurably behind (no fairness.gap), not measurably back either.
    adaptation: Adaptation | None = Adaptation(
        3, ["B"], {"B": 0.88}, "drift in B", baseline_counts={"B": (264, 300)}, windows=1
    )
    for window in range(4, 14):
        result = step(adaptation, window, {"A": (90, 100), "B": (84, 100)}, BEFORE, set(), False, S)
        assert result.trains and not result.fell_behind
        adaptation = result.adaptation
    assert adaptation is not None and adaptation.closed is None and not adaptation.behind_alerted


def test_drift_opens_one_for_the_drifted_group_even_before_accuracy_falls() -> None:
    now = {"A": (90, 100), "B": (87, 100)}
    drifted = step(None, 4, now, BEFORE, {"B"}, True, S)
    assert drifted.adaptation is not None and drifted.adaptation.groups == ["B"]
    assert drifted.adaptation.reason == "drift in B"
    # Drift of the whole window names no group: every group is watched.
    overall = step(None, 4, now, BEFORE, set(), True, S)
    assert overall.adaptation is not None and overall.adaptation.groups == ["A", "B"]


def test_noise_around_the_baseline_opens_nothing() -> None:
    # 0.86 on 100 samples against 0.88 on 300: a fall of 2 points, within the margin.
    assert (
        step(None, 5, {"A": (89, 100), "B": (86, 100)}, BEFORE, set(), False, S).adaptation is None
    )
    # 0.84 is beyond the margin but not beyond chance at 0.01 / 2 (Fisher p = 0.19).
    assert fallen_groups(pooled(BEFORE), {"B": (84, 100)}, S) == []
    assert fallen_groups(pooled(BEFORE), {"B": (70, 100)}, S) == ["B"]


def test_an_adaptation_that_stays_behind_raises_once_and_stays_open() -> None:
    adaptation: Adaptation | None = Adaptation(
        3, ["B"], {"B": 0.88}, "drift in B", baseline_counts={"B": (264, 300)}, windows=1
    )
    fell = []
    for window in range(4, 12):
        result = step(adaptation, window, {"A": (90, 100), "B": (60, 100)}, BEFORE, set(), False, S)
        adaptation = result.adaptation
        fell.append(result.fell_behind)
        assert result.trains
    assert fell == [False, False, False, False, True, False, False, False]  # at 6 windows
    assert adaptation is not None and adaptation.behind_alerted and adaptation.windows == 9


def test_no_window_before_means_nothing_to_wait_for() -> None:
    assert step(None, 2, {"B": (10, 100)}, [], {"B"}, True, S).adaptation is None


def test_a_window_without_the_watched_group_does_not_close_it() -> None:
    adaptation = Adaptation(
        3, ["B"], {"B": 0.88}, "drift in B", baseline_counts={"B": (264, 300)}, windows=1
    )
    result = step(adaptation, 4, {"A": (90, 100)}, BEFORE, set(), False, S)
    assert result.trains and result.adaptation is not None and result.adaptation.closed is None


def _summary(window: int, correct: int, **extra: object) -> dict[str, object]:
    return {"window": window, "prequential_counts": {"B": [correct, 100]}, **extra}


def test_the_baseline_is_anchored_where_the_stream_was_last_back() -> None:
    # A slow drift: B falls a point a window from 95 at window 1; nothing drifted.
    slow = [_summary(w, 96 - w) for w in range(12, 0, -1)]  # newest first
    assert [c["B"][0] for c in baseline_history(slow, 3)] == [95, 94, 93]  # windows 1-3
    # After an adaptation that closed at window 20, the baseline starts there.
    closed = Adaptation(15, ["B"], {"B": 0.9}, "drift in B", closed=20)
    after = [_summary(22, 88), _summary(21, 89), _summary(20, 90, adaptation=closed.to_dict())]
    opened = Adaptation(15, ["B"], {"B": 0.9}, "drift in B")
    during = [_summary(w, 60, adaptation=opened.to_dict()) for w in range(19, 14, -1)]
    history = baseline_history(after + during + slow, 3)
    assert [c["B"][0] for c in history] == [90, 89, 88]
    # With fewer quiet windows since the close, the newest quiet ones before make it up.
    assert [c["B"][0] for c in baseline_history(after[1:] + during + slow, 3)] == [84, 90, 89]
