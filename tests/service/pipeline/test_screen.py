"""The label screen (``screen_labels``) on synthetic, seeded probabilities: a group with 40% of
its labels swapped is suspect and most of its wrong labels are quarantined; a clean group,
a skipped group and a small group are not. Margins are printed (``pytest -s``)."""

from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.screen import (
    NOT_SCREENED_DRIFT,
    NOT_SCREENED_FEW,
    reference_flags,
    screen_labels,
)

K = 5  # classes
ALPHA = 0.01
REFERENCE = (12, 200)  # (flagged, n) cleanlab flags among each group's reference samples


def _window(
    sizes: dict[str, int], swapped: dict[str, float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities (a champion right 95% of the time, confident), groups and which
    labels are wrong: ``swapped`` share of a group's labels moved to another class."""
    rng = np.random.default_rng(seed)
    groups = np.concatenate([[g] * n for g, n in sizes.items()])
    n = len(groups)
    truth = rng.integers(0, K, n)
    mistaken = rng.random(n) < 0.05
    predicted = np.where(mistaken, (truth + rng.integers(1, K, n)) % K, truth)
    logits = rng.normal(0.0, 0.5, (n, K)) + 4.0 * np.eye(K)[predicted]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    wrong = np.zeros(n, dtype=bool)
    for group, share in swapped.items():
        members = np.flatnonzero(groups == group)
        wrong[rng.choice(members, size=round(share * len(members)), replace=False)] = True
    labels = np.where(wrong, (truth + rng.integers(1, K, n)) % K, truth)
    return labels, probabilities, groups, wrong


def _screen(labels, probabilities, groups, **overrides):  # type: ignore[no-untyped-def]
    arguments = {
        "skip": {},
        "reference": {"A": REFERENCE, "B": REFERENCE, "C": REFERENCE},
        "alpha": ALPHA,
        "margin": 0.02,
        "min_group_size": 15,
        **overrides,
    }
    return screen_labels(labels, probabilities, groups, **arguments)


def test_a_group_with_swapped_labels_is_suspect_and_its_wrong_labels_held() -> None:
    labels, probabilities, groups, wrong = _window({"A": 200, "B": 200}, {"B": 0.4})
    screen = _screen(labels, probabilities, groups)
    a, b = screen.groups["A"], screen.groups["B"]
    caught = (screen.quarantined & wrong).sum() / wrong.sum()
    precision = (screen.quarantined & wrong).sum() / screen.quarantined.sum()
    print(
        f"\nthreshold {screen.threshold:.3g}; A: {a.flagged}/{a.n} flagged, expected "
        f"{a.expected}, p {a.p_value:.3g}; B: {b.flagged}/{b.n}, p {b.p_value:.3g}; "
        f"B's wrong labels held {caught:.0%}, held that are wrong {precision:.0%}"
    )
    assert screen.threshold == pytest.approx(ALPHA / 2)  # Bonferroni over the 2 screened
    assert screen.suspect_groups == ["B"]
    assert b.suspect and b.p_value is not None and b.p_value < screen.threshold * 1e-10
    assert not a.suspect and a.p_value is not None and a.p_value > screen.threshold * 10
    assert a.expected == b.expected == pytest.approx(12 / 200, abs=1e-4)
    assert a.reference == b.reference == [12, 200]
    assert not screen.quarantined[groups == "A"].any()  # A's flags are the champion's errors
    assert screen.candidates[groups == "A"].sum() == a.flagged
    assert caught > 0.7 and precision > 0.9
    assert np.all(screen.scores[screen.quarantined] < 0.5)
    assert np.array_equal(screen.believed, probabilities.argmax(axis=1))
    summary = screen.to_dict()
    assert summary["quarantined"] == int(screen.quarantined.sum())
    assert summary["flagged"] == a.flagged + b.flagged
    assert summary["groups"]["B"]["suspect"] is True and summary["groups"]["A"]["skipped"] is None


def test_a_skipped_group_is_never_quarantined_and_says_why() -> None:
    labels, probabilities, groups, _ = _window({"A": 200, "B": 200}, {"B": 0.4}, seed=1)
    screen = _screen(labels, probabilities, groups, skip={"B": NOT_SCREENED_DRIFT})
    b = screen.groups["B"]
    assert b.skipped == "its inputs drifted in this window" and b.n == 200
    assert not b.suspect and b.flagged == 0 and b.p_value is None and b.expected is None
    in_b = groups == "B"
    assert not screen.quarantined[in_b].any() and not screen.candidates[in_b].any()
    assert np.all(screen.scores[in_b] == 1.0)
    assert screen.threshold == pytest.approx(ALPHA)  # one group screened
    assert screen.suspect_groups == []
    print(f"\nA alone: p {screen.groups['A'].p_value:.3g} against {screen.threshold:.3g}")


def test_a_group_below_the_minimum_size_is_skipped() -> None:
    labels, probabilities, groups, _ = _window({"A": 200, "B": 200, "C": 10}, {"C": 0.5}, seed=2)
    screen = _screen(labels, probabilities, groups)
    c = screen.groups["C"]
    assert c.skipped == NOT_SCREENED_FEW.format(n=15) == "fewer than 15 samples"
    assert c.n == 10 and not c.suspect
    assert not screen.quarantined[groups == "C"].any()
    assert screen.threshold == pytest.approx(ALPHA / 2)  # A and B screened, not C


def test_the_running_rate_is_the_reference_flags_and_a_small_reference_asks_for_more() -> None:
    # A clean reference: cleanlab flags only the champion's confident mistakes there.
    labels, probabilities, groups, _ = _window({"A": 300, "B": 300, "C": 10}, {}, seed=3)
    counts = reference_flags(labels, probabilities, groups, min_n=15)
    print(f"\nreference flags (flagged, n) on a clean reference: {counts}")
    assert set(counts) == {"A", "B"}  # C has too few reference samples to say
    assert all(n == 300 and k / n < 0.1 for k, n in counts.values())
    # 14 of 128 flagged against 1 of 76 in the reference: not beyond chance at 0.005.
    window, proba, names, _ = _window({"B": 128}, {"B": 0.07}, seed=5)
    flags = reference_flags(window, proba, names, min_n=15)["B"][0]
    small = _screen(window, proba, names, reference={"B": (1, 76)}, alpha=0.005)
    large = _screen(window, proba, names, reference={"B": (4, 300)}, alpha=0.005)
    print(f"B {flags}/128: against 1/76 p={small.groups['B'].p_value:.3g}, "
          f"against 4/300 p={large.groups['B'].p_value:.3g}")  # fmt: skip
    assert small.groups["B"].p_value > large.groups["B"].p_value
    # A group the reference cannot speak for is not screened, whatever its flags.
    window, proba, names, _ = _window({"A": 200, "B": 200}, {"B": 0.4}, seed=4)
    screen = _screen(window, proba, names, reference={"A": counts["A"]})
    assert screen.groups["B"].skipped == (
        "fewer than 15 reference samples to learn its usual rate from"
    )
    assert not screen.quarantined[names == "B"].any()


def test_a_rise_within_the_margin_is_not_suspect() -> None:
    labels, probabilities, groups, _ = _window({"A": 4000}, {"A": 0.03}, seed=6)
    tight = _screen(labels, probabilities, groups, reference={"A": (200, 4000)}, margin=0.0)
    loose = _screen(labels, probabilities, groups, reference={"A": (200, 4000)}, margin=0.05)
    a = tight.groups["A"]
    print(f"\nA {a.flagged}/{a.n} against 200/4000: p={a.p_value:.3g}")
    assert a.suspect and not loose.groups["A"].suspect
