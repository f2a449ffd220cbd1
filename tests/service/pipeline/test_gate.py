import numpy as np
import pytest

from service.pipeline.gate import GateSettings, run_gate


def _predictions(rng, y, accuracy):
    wrong = rng.random(len(y)) > accuracy
    return np.where(wrong, (y + 1) % 10, y)


def test_same_model_passes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    groups = np.array(["A", "B"] * 300)
    pred = _predictions(rng, y, 0.9)
    report = run_gate(y, pred, pred, groups, np.ones(600), GateSettings())
    assert report.passed and report.reasons == []
    assert {c.verdict for c in report.groups} == {"pass"}


def test_regression_in_one_group_fails_and_names_it() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 800)
    groups = np.array(["A", "B"] * 400)
    champion = _predictions(rng, y, 0.9)
    candidate = champion.copy()
    b = np.flatnonzero(groups == "B")
    flip = rng.choice(b, size=80, replace=False)  # about 20 points worse on B
    candidate[flip] = (y[flip] + 1) % 10
    report = run_gate(y, champion, candidate, groups, np.ones(800), GateSettings())
    assert not report.passed
    assert report.failed_groups == ["B"]
    by = {c.subject: c for c in report.groups}
    assert by["B"].difference < -0.1 and by["B"].interval[1] < 0
    assert by["A"].verdict == "pass"
    assert report.reasons[0].startswith("group B: accuracy fell by")


def test_small_group_is_reported_but_not_decisive() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 410)
    groups = np.array(["A"] * 400 + ["tiny"] * 10)
    champion = y.copy()
    champion[:10] = (y[:10] + 1) % 10  # the candidate mends 10 of A's samples ...
    candidate = y.copy()
    candidate[400:] = (y[400:] + 1) % 10  # ... and gets the tiny group all wrong
    report = run_gate(
        y, champion, candidate, groups, np.ones(410), GateSettings(max_gap_increase=1.0)
    )
    tiny = next(c for c in report.groups if c.subject == "tiny")
    assert tiny.verdict == "not decisive" and tiny.n == 10
    assert tiny.reason == "10 samples, fewer than 30"
    assert report.windows[0].difference == 0.0  # the window as a whole is unchanged
    assert report.passed


def test_a_gap_widened_by_a_better_group_passes() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 2000)
    groups = np.array(["A", "B"] * 1000)
    champion = _predictions(rng, y, 0.85)
    candidate = champion.copy()
    a = np.flatnonzero((groups == "A") & (champion != y))
    candidate[a] = y[a]  # A gets perfect: the gap widens by ~15 points, nobody worse
    report = run_gate(y, champion, candidate, groups, np.ones(2000), GateSettings())
    print(f"gap {report.champion_gap:.3f} -> {report.candidate_gap:.3f}")
    assert report.candidate_gap - report.champion_gap > 0.1
    assert report.passed and not report.gap_failed


def test_a_gap_widened_by_a_worse_worst_group_fails_naming_it() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 4000)
    groups = np.array(["A", "B"] * 2000)
    champion = _predictions(rng, y, 0.85)
    candidate = champion.copy()
    a = np.flatnonzero((groups == "A") & (champion != y))
    candidate[a] = y[a]  # A gains ~15 points ...
    b = rng.choice(np.flatnonzero((groups == "B") & (champion == y)), size=30, replace=False)
    candidate[b] = (y[b] + 1) % 10  # ... while B loses 1.5, under the tolerance of 2
    report = run_gate(y, champion, candidate, groups, np.ones(4000), GateSettings())
    by = {c.subject: c for c in report.groups}
    print(f"B {by['B'].difference:+.4f}, p={by['B'].p_value:.2g}")
    assert by["B"].verdict == "pass" and by["B"].difference == pytest.approx(-0.015)
    assert by["B"].p_value < 1e-8  # 30 discordant pairs, all against: 2^-30
    assert not report.passed and report.gap_failed
    assert "worst group B got worse" in report.reasons[0]
    assert report.failed_groups == ["B"]


def test_holm_rejects_step_down() -> None:
    from service.pipeline.gate import _holm

    assert _holm({"a": 0.001, "b": 0.02, "c": 0.04}, 0.05) == {"a", "b", "c"}
    assert _holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05) == {"a"}  # 0.03 > 0.05 / 2
    assert _holm({"a": 0.03, "b": 0.04}, 0.05) == set()  # 0.03 > 0.05 / 2


def test_report_carries_p_values() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 10, 400)
    pred = _predictions(rng, y, 0.9)
    report = run_gate(y, pred, pred, np.array(["A", "B"] * 200), np.ones(400), GateSettings())
    assert all(c.p_value == 1.0 for c in report.groups)  # identical: no evidence of harm


def test_report_has_precision_recall_f1_auc_per_group() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 10, 300)
    proba = rng.random((300, 10))
    proba[np.arange(300), y] += 2.0  # informative scores
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    groups = np.array(["A", "B", "C"] * 100)
    report = run_gate(
        y,
        pred,
        pred,
        groups,
        np.ones(300),
        GateSettings(),
        champion_proba=proba,
        candidate_proba=proba,
    )
    for model in ("champion", "candidate"):
        for group in ("A", "B", "C"):
            row = report.metrics[model][group]
            assert set(row) == {"accuracy", "precision", "recall", "f1", "auc"}
            assert row["accuracy"] == 1.0 and row["f1"] == 1.0 and row["auc"] > 0.99


def _windows_stream(rng, per_window: int = 200, n_windows: int = 4):
    """Labels, groups (A, B alternating) and window numbers 1..n_windows of a holdout."""
    n = per_window * n_windows
    y = rng.integers(0, 10, n)
    groups = np.array(["A", "B"] * (n // 2))
    windows = np.repeat(np.arange(1, n_windows + 1), per_window)
    return y, groups, windows


def test_a_candidate_that_forgets_an_earlier_window_is_rejected_naming_it() -> None:
    rng = np.random.default_rng(7)
    y, groups, windows = _windows_stream(rng)
    champion = _predictions(rng, y, 0.85)
    candidate = champion.copy()
    # Window 1 is forgotten: 30 of its 200 samples (both groups) go wrong, 15 points ...
    right_in_1 = np.flatnonzero((windows == 1) & (champion == y))
    forgot = rng.choice(right_in_1, size=30, replace=False)
    candidate[forgot] = (y[forgot] + 1) % 10
    # ... while the later windows improve, so that no group is worse overall.
    wrong_later = np.flatnonzero((windows > 1) & (champion != y))
    learnt = rng.choice(wrong_later, size=30, replace=False)
    candidate[learnt] = y[learnt]
    report = run_gate(y, champion, candidate, groups, windows, GateSettings())
    groups_by = {c.subject: c for c in report.groups}
    assert all(c.verdict == "pass" for c in report.groups), groups_by
    assert not report.passed and report.regressed
    assert report.failed_windows == ["window 1"]
    assert report.failed_groups == []  # no group, and not the gap: the window failed
    by = {c.subject: c for c in report.windows}
    assert set(by) == {"window 1", "window 2", "window 3", "window 4"}
    w1 = by["window 1"]
    assert (w1.n, w1.verdict) == (200, "fail")
    assert w1.difference == -0.15 and w1.candidate == w1.champion - 0.15
    assert w1.interval[0] < -0.15 < w1.interval[1] < 0
    assert w1.p_value is not None and w1.p_value < 0.001
    assert [r.split(":")[0] for r in report.reasons] == ["window 1"]
    assert report.reasons[0].startswith("window 1: accuracy fell by 0.150")
    assert all(by[f"window {w}"].verdict == "pass" for w in (2, 3, 4))
    assert all(by[f"window {w}"].difference > 0 for w in (2, 3, 4))


def test_a_candidate_that_keeps_every_window_passes() -> None:
    rng = np.random.default_rng(8)
    y, groups, windows = _windows_stream(rng)
    champion = _predictions(rng, y, 0.85)
    candidate = champion.copy()
    # It learns the newest window and churns a little elsewhere (as much mended as broken).
    wrong_4 = np.flatnonzero((windows == 4) & (champion != y))
    candidate[wrong_4[:20]] = y[wrong_4[:20]]
    for w in (1, 2, 3):
        right = np.flatnonzero((windows == w) & (champion == y))[:3]
        wrong = np.flatnonzero((windows == w) & (champion != y))[:3]
        candidate[right] = (y[right] + 1) % 10
        candidate[wrong] = y[wrong]
    report = run_gate(y, champion, candidate, groups, windows, GateSettings())
    assert report.passed and report.reasons == [] and not report.regressed
    assert [c.verdict for c in report.windows] == ["pass"] * 4
    assert [c.n for c in report.windows] == [200] * 4
    assert all(c.reason.startswith("difference ") for c in report.windows)


def test_small_windows_are_reported_but_not_decisive() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 10, 420)
    groups = np.array(["A", "B"] * 210)
    windows = np.array([1] * 400 + [2] * 20)
    champion = y.copy()
    champion[:20] = (y[:20] + 1) % 10  # the candidate mends 20 samples of window 1 ...
    candidate = y.copy()
    candidate[400:] = (y[400:] + 1) % 10  # ... and forgets all 20 of the small window 2
    report = run_gate(y, champion, candidate, groups, windows, GateSettings())
    by = {c.subject: c for c in report.windows}
    assert (by["window 2"].verdict, by["window 2"].n) == ("not decisive", 20)
    assert by["window 2"].difference == -1.0
    assert by["window 2"].reason == "20 samples, fewer than 30"
    assert report.passed


def test_windows_share_one_holm_family_with_the_groups() -> None:
    """Groups A, B and windows 1, 2 are four tests: each p lies between 0.05 / 4 and 0.05 / 2.

    Holm over the two groups alone would reject both; over the family of four it rejects
    none, and every interval is a Bonferroni interval for four comparisons.
    """
    from scipy.stats import norm

    cells = [(g, w) for g in ("A", "B") for w in (1, 2)]
    groups = np.repeat([g for g, _ in cells], 1000)
    windows = np.repeat([w for _, w in cells], 1000)
    y = np.tile(np.arange(1000) % 10, 4)
    champion, candidate = y.copy(), y.copy()
    for k in range(4):  # per cell: 22 samples the candidate breaks, 13 it mends
        broken, mended = slice(1000 * k, 1000 * k + 22), slice(1000 * k + 22, 1000 * k + 35)
        candidate[broken] = (y[broken] + 1) % 10
        champion[mended] = (y[mended] + 1) % 10
    report = run_gate(y, champion, candidate, groups, windows, GateSettings(tolerance=0.005))
    slices = [*report.groups, *report.windows]
    assert [c.subject for c in slices] == ["A", "B", "window 1", "window 2"]
    assert all(0.05 / 4 < c.p_value < 0.05 / 2 for c in slices), [c.p_value for c in slices]
    assert report.passed and [c.verdict for c in slices] == ["pass"] * 4
    z = norm.ppf(1 - 0.05 / 4)
    for c in slices:
        diff = np.array([-1.0] * 44 + [1.0] * 26 + [0.0] * 1930)
        se = diff.std(ddof=1) / np.sqrt(2000)
        assert c.interval == pytest.approx((c.difference - z * se, c.difference + z * se))


def test_the_exact_test_on_few_discordant_pairs() -> None:
    """Four discordant pairs, all against the candidate, in 40 samples: the normal
    approximation of the paired difference said p = 0.02; the exact sign test says 1/16."""
    y = np.arange(240) % 10
    groups = np.array(["A"] * 40 + ["B"] * 200)
    champion, candidate = y.copy(), y.copy()
    candidate[:4] = (y[:4] + 1) % 10
    candidate[40:60] = (y[40:60] + 1) % 10  # B: 20 of 200 worse, p = 2^-20
    report = run_gate(y, champion, candidate, groups, np.ones(240), GateSettings(tolerance=0.05))
    by = {c.subject: c for c in report.groups}
    print({g: (c.p_value, c.min_detectable_drop, c.verdict) for g, c in by.items()})
    assert by["A"].p_value == 0.5**4 and by["B"].p_value == 0.5**20
    # Level 0.05 / 3 slices: 2^-6 is the first power of two below it.
    assert by["A"].min_detectable_drop == pytest.approx(6 / 40)
    assert by["B"].min_detectable_drop == pytest.approx(6 / 200)
    assert by["A"].verdict == "not decisive"  # 0.15 > twice the tolerance
    assert by["B"].verdict == "fail" and report.failed_groups == ["B"]


def test_a_slice_that_cannot_see_twice_the_tolerance_is_not_decisive() -> None:
    y = np.arange(100) % 10
    groups = np.array(["A"] * 100)
    champion, candidate = y.copy(), y.copy()
    candidate[:12] = (y[:12] + 1) % 10  # 12 points worse
    report = run_gate(y, champion, candidate, groups, np.ones(100), GateSettings())
    a = report.groups[0]
    print(f"MDE {a.min_detectable_drop:.3f} against twice the tolerance 0.04")
    # Neither slice (A, window 1) can decide, even alone at 0.05: 5 pairs of 100.
    assert a.min_detectable_drop == pytest.approx(5 / 100) and a.verdict == "not decisive"
    assert "smallest drop the test can see (0.050)" in a.reason
    assert report.passed  # reported, not decisive: the gap rule has one group only


def _eras_stream() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ten windows of 100 held-out samples of A and of B; B's inputs changed at window 6."""
    rng = np.random.default_rng(20)
    windows = np.repeat(np.arange(1, 11), 200)
    groups = np.tile(np.array(["A", "B"] * 100), 10)
    return rng.integers(0, 10, len(windows)), groups, windows


def _spread(rows: np.ndarray, n: int) -> np.ndarray:
    assert len(rows) >= n
    return rows[np.linspace(0, len(rows) - 1, n).astype(int)]


def _worse(y: np.ndarray, pred: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """``pred`` with ``n`` of its right answers among ``rows`` made wrong, spread evenly."""
    out = pred.copy()
    right = _spread(rows[pred[rows] == y[rows]], n)
    out[right] = (y[right] + 1) % 10
    return out


def _better(y: np.ndarray, pred: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    out = pred.copy()
    wrong = _spread(rows[pred[rows] != y[rows]], n)
    out[wrong] = y[wrong]
    return out


def test_a_shifted_group_is_not_held_to_its_images_from_before_the_shift() -> None:
    y, groups, windows = _eras_stream()
    rng = np.random.default_rng(21)
    champion = _predictions(rng, y, 0.85)
    old_b = np.flatnonzero((groups == "B") & (windows < 6))
    new_b = np.flatnonzero((groups == "B") & (windows >= 6))
    # The candidate forgets B's old domain (100 of 500 go wrong) and learns its new one.
    candidate = _better(y, _worse(y, champion, old_b, 100), new_b, 40)
    held = run_gate(y, champion, candidate, groups, windows, GateSettings())
    shifted = run_gate(y, champion, candidate, groups, windows, GateSettings(), eras={"B": 6})
    print("without eras:", held.reasons)
    print("with eras:", [(c.subject, c.difference, c.verdict) for c in shifted.before_shift])
    assert not held.passed and "B" in held.failed_groups  # held to the gone images: rejected
    assert shifted.passed, shifted.reasons
    (before,) = shifted.before_shift
    assert before.subject == "B (before its shift)" and before.verdict == "not decisive"
    assert before.n == 500 and before.difference == -0.2
    b = next(c for c in shifted.groups if c.subject == "B")
    assert b.n == 500 and b.difference == 0.08 and b.verdict == "pass"


def test_an_unshifted_group_is_still_protected_on_all_its_windows() -> None:
    y, groups, windows = _eras_stream()
    rng = np.random.default_rng(22)
    champion = _predictions(rng, y, 0.85)
    old_a = np.flatnonzero((groups == "A") & (windows < 6))
    new_a = np.flatnonzero((groups == "A") & (windows >= 6))
    # A forgets its old windows by more than it gains on the new ones: 15 points on 500.
    candidate = _better(y, _worse(y, champion, old_a, 75), new_a, 10)
    report = run_gate(y, champion, candidate, groups, windows, GateSettings(), eras={"B": 6})
    a = next(c for c in report.groups if c.subject == "A")
    print("A:", a.n, a.difference, a.p_value)
    assert not report.passed and report.failed_groups == ["A"]
    assert a.n == 1000 and a.verdict == "fail" and a.difference == -0.065
    assert report.before_shift and report.before_shift[0].group == "B"


def test_a_drop_on_the_recent_windows_is_not_diluted_by_the_past() -> None:
    rng = np.random.default_rng(23)
    windows = np.repeat(np.arange(1, 11), 1000)
    groups = np.tile(np.array(["A", "B"] * 500), 10)
    y = rng.integers(0, 10, len(windows))
    champion = _predictions(rng, y, 0.9)
    recent_a = np.flatnonzero((groups == "A") & (windows >= 8))
    candidate = _worse(y, champion, recent_a, 150)  # 10 points on A's last 3 windows
    report = run_gate(y, champion, candidate, groups, windows, GateSettings())
    a = next(c for c in report.groups if c.subject == "A")
    recent = next(c for c in report.recent if c.group == "A")
    print("A overall", a.difference, a.verdict, "recent", recent.difference, recent.verdict)
    assert a.difference == -0.03 and recent.n == 1500 and recent.difference == -0.1
    assert recent.verdict == "fail" and "A" in report.failed_groups
    assert any(
        r.startswith("group A (recent windows): accuracy fell by 0.100") for r in report.reasons
    )


def test_the_chain_guard_stops_losses_adding_up_across_promotions() -> None:
    rng = np.random.default_rng(24)
    y = rng.integers(0, 10, 2000)
    groups = np.array(["A", "B"] * 1000)
    windows = np.repeat(np.arange(1, 5), 500)
    a = np.flatnonzero(groups == "A")
    earlier = _predictions(rng, y, 0.95)  # version 2, two promotions ago
    champion = _worse(y, earlier, a, 18)  # version 3: 1.8 points lower on A, passed its gate
    candidate = _worse(y, champion, a, 18)  # 1.8 more: within the tolerance of the champion
    alone = run_gate(y, champion, candidate, groups, windows, GateSettings())
    guarded = run_gate(
        y, champion, candidate, groups, windows, GateSettings(), earlier={2: earlier}
    )
    kept = run_gate(y, champion, champion, groups, windows, GateSettings(), earlier={2: earlier})
    chain = {c.group: c for c in guarded.chain}
    print("chain:", {g: (c.difference, c.p_value, c.verdict) for g, c in chain.items()})
    assert alone.passed  # each step alone is within the tolerance
    assert not guarded.passed and guarded.failed_groups == ["A"]
    assert chain["A"].subject == "A against version 2" and chain["A"].difference == -0.036
    assert chain["A"].verdict == "fail" and chain["B"].verdict == "pass"
    assert any(r.startswith("chain guard, group A against version 2") for r in guarded.reasons)
    assert kept.passed and {c.verdict for c in kept.chain} == {"pass"}  # -1.8 points: allowed
