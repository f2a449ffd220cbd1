import pytest

from drift.bonferroni import TOO_FEW, bonferroni_threshold, grouped_test


def test_bonferroni_threshold() -> None:
    assert bonferroni_threshold(0.01, 3) == pytest.approx(0.01 / 3)
    assert bonferroni_threshold(0.01, 0) == 0.01


def test_only_groups_big_enough_on_both_sides_are_tested_and_counted() -> None:
    calls: list[str | None] = []

    def score(group: str | None) -> tuple[float, float]:
        calls.append(group)
        return 1.0, 0.004 if group == "b" else 0.5

    groups_ref = ["a"] * 30 + ["b"] * 30 + ["c"] * 5
    result = grouped_test(
        groups_ref, ["a"] * 25 + ["b"] * 25 + ["d"] * 40, score, p_value=0.015, min_group_size=20
    )
    assert calls == [None, "a", "b"]
    assert result.threshold == pytest.approx(0.005)
    assert result.is_drift and result.p_value == 0.5
    assert [g for g, v in result.per_group.items() if v.is_drift] == ["b"]
    for group, n_ref, n_win in (("c", 5, 0), ("d", 0, 40)):
        verdict = result.per_group[group]
        assert (verdict.tested, verdict.note) == (False, TOO_FEW)
        assert (verdict.n_reference, verdict.n_window) == (n_ref, n_win)
