import numpy as np

from service.gate import GateSettings, run_gate


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
    candidate = y.copy()
    candidate[400:] = (y[400:] + 1) % 10  # tiny group all wrong
    report = run_gate(
        y, champion, candidate, groups, np.ones(410), GateSettings(max_gap_increase=1.0)
    )
    tiny = next(c for c in report.groups if c.subject == "tiny")
    assert tiny.verdict == "not decisive" and tiny.n == 10
    assert report.passed


def test_widening_gap_fails() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 2000)
    groups = np.array(["A", "B"] * 1000)
    champion = _predictions(rng, y, 0.85)
    candidate = champion.copy()
    a = np.flatnonzero((groups == "A") & (champion != y))
    candidate[a] = y[a]  # A gets perfect: the gap widens by ~15 points, nobody worse
    report = run_gate(y, champion, candidate, groups, np.ones(2000), GateSettings())
    assert not report.passed
    assert "gap widened" in report.reasons[0]
    assert report.failed_groups == ["B"]  # nobody got worse: the gap failure names the worst group


def test_holm_rejects_step_down() -> None:
    from service.gate import _holm

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
