"""Drift incidents: one alert per run of drifted windows of a kind, closed when drift stops."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from drift.result import DriftKind, DriftResult, GroupVerdict
from service.alerts.incidents import WindowDrift, record_window
from service.context import Service
from service.store.schema import Alert, Stream


def _result(kind: DriftKind, drift: bool, p: float) -> DriftResult:
    verdict = GroupVerdict(is_drift=drift, statistic=1.0, p_value=p, n_reference=50, n_window=50)
    return DriftResult(
        kind=kind,
        detector="mmd",
        is_drift=drift,
        statistic=1.0,
        p_value=p,
        threshold=0.005,
        feature_space="penultimate",
        n_reference=100,
        n_window=100,
        per_group={"B": verdict, "A": GroupVerdict(False, 0.1, 0.5, 50, 50)},
    )


def _play(service: Service, verdicts: list[tuple[DriftKind, bool]]) -> list[dict[str, Any]]:
    with service.store.session() as session:
        stream = Stream(name="s", classes=[0, 1], channels=1, size=8)
        session.add(stream)
        session.flush()
        stream_id = stream.id
    for window, (kind, drift) in enumerate(verdicts, start=1):
        with service.store.session() as session:
            p = window / 10_000 if drift else 0.4
            ids = [f"w{window}-{i}" for i in range(3)] if drift else []
            record_window(
                session, WindowDrift(stream_id, "s", window, _result(kind, drift, p), ids)
            )
    with service.store.session() as session:
        rows = session.scalars(select(Alert).order_by(Alert.id)).all()
        return [{"kind": a.kind, "message": a.message, **a.payload} for a in rows]


def test_consecutive_drifted_windows_form_one_incident_closed_by_a_quiet_window(service) -> None:
    verdicts = [
        ("covariate", False),
        ("covariate", True),
        ("covariate", True),
        ("covariate", True),
        ("covariate", False),
        ("covariate", True),
    ]
    first, second = _play(service, verdicts)
    assert first["incident"] == {"windows": [2, 3, 4], "open": False, "closed_by_window": 5}
    assert first["p_values"] == [2e-4, 3e-4, 4e-4]
    assert first["group"] == "B" and first["groups"] == ["B"]
    assert first["shifted_samples"] == ["w4-0", "w4-1", "w4-2"]  # the latest window's
    assert [w["window"] for w in first["windows"]] == [2, 3, 4]
    assert "[3 windows]" in first["message"]
    assert second["incident"] == {"windows": [6], "open": True, "closed_by_window": None}


def test_each_kind_has_its_own_incident(service) -> None:
    with service.store.session() as session:
        stream = Stream(name="s", classes=[0, 1], channels=1, size=8)
        session.add(stream)
        session.flush()
        stream_id = stream.id
    per_window = {1: {"covariate": True, "label": False}, 2: {"covariate": True, "label": True}}
    per_window[3] = {"covariate": False, "label": True}
    for window, verdicts in per_window.items():
        with service.store.session() as session:
            for kind, drift in verdicts.items():
                result = _result(kind, drift, 0.001 if drift else 0.5)
                record_window(session, WindowDrift(stream_id, "s", window, result, []))
    with service.store.session() as session:
        by_kind = {a.kind: a.payload["incident"] for a in session.scalars(select(Alert))}
    assert by_kind["drift.covariate"] == {"windows": [1, 2], "open": False, "closed_by_window": 3}
    assert by_kind["drift.label"] == {"windows": [2, 3], "open": True, "closed_by_window": None}


def test_a_retried_window_is_recorded_once(service) -> None:
    alerts = _play(service, [("concept", True)])
    assert alerts[0]["incident"]["windows"] == [1]
    with service.store.session() as session:
        stream_id = session.scalars(select(Stream.id)).one()
        again = WindowDrift(stream_id, "s", 1, _result("concept", True, 0.001), ["x"])
        record_window(session, again)  # the learner died after raising it, the retry re-runs
    with service.store.session() as session:
        (alert,) = session.scalars(select(Alert)).all()
        assert alert.payload["incident"]["windows"] == [1]


def test_an_untested_window_ends_the_incident(service) -> None:
    with service.store.session() as session:
        stream = Stream(name="s", classes=[0, 1], channels=1, size=8)
        session.add(stream)
        session.flush()
        stream_id = stream.id
    for window in (1, 2, 5):  # windows 3 and 4 had no covariate verdict
        with service.store.session() as session:
            result = _result("covariate", True, 0.001)
            record_window(session, WindowDrift(stream_id, "s", window, result, []))
    with service.store.session() as session:
        first, second = (a.payload["incident"] for a in session.scalars(select(Alert)))
    assert first == {"windows": [1, 2], "open": False, "closed_by_window": 3}
    assert second == {"windows": [5], "open": True, "closed_by_window": None}


def _grouped(drifted: dict[str, float], overall: float = 1.0) -> DriftResult:
    """A covariate verdict whose groups ``drifted`` fired (with those p-values), the rest not."""
    per_group = {
        g: GroupVerdict(g in drifted, 1.0, drifted.get(g, 0.5), 50, 50) for g in ("A", "B", "C")
    }
    return DriftResult(
        kind="covariate",
        detector="mmd",
        is_drift=True,
        statistic=0.1,
        p_value=overall,
        threshold=0.005,
        feature_space="penultimate",
        n_reference=150,
        n_window=150,
        per_group=per_group,
    )


def _alert_after(service: Service, results: list[DriftResult]) -> Alert:
    with service.store.session() as session:
        stream = Stream(name="s", classes=[0, 1], channels=1, size=8)
        session.add(stream)
        session.flush()
        stream_id = stream.id
    for window, result in enumerate(results, start=1):
        with service.store.session() as session:
            drift = WindowDrift(stream_id, "s", window, result, [f"w{window}-0"])
            record_window(session, drift)
    with service.store.session() as session:
        (alert,) = session.scalars(select(Alert)).all()
        return alert


def test_the_message_quotes_the_group_tests_that_fired_not_the_overall_p(service) -> None:
    alert = _alert_after(service, [_grouped({"B": 0.0002}, overall=1.0)])
    assert (
        alert.message == "covariate shift in group B from window 1 (mmd: group B p=0.0002 < 0.005)"
    )
    assert alert.payload["title"] == "covariate drift in group B"


def test_the_message_quotes_the_overall_test_when_it_fired(service) -> None:
    alert = _alert_after(service, [_grouped({}, overall=0.001)])
    assert (
        alert.message
        == "covariate shift in the whole window from window 1 (mmd: overall p=0.001 < 0.005)"
    )
    assert alert.payload["title"] == "covariate drift in the whole window"


def test_the_title_names_every_group_that_drifted_and_the_samples_say_where_from(
    service,
) -> None:
    alert = _alert_after(service, [_grouped({"A": 0.001}), _grouped({"B": 0.0002})])
    payload = alert.payload
    assert payload["title"] == "covariate drift in groups A, B"
    assert payload["groups"] == ["A", "B"] and payload["group"] is None
    assert payload["shifted_samples"] == ["w2-0"]
    assert payload["shifted_from"] == {"window": 2, "groups": ["B"]}
    assert alert.message == (
        "covariate shift in groups A, B from window 1 "
        "(mmd: group B p=0.0002 < 0.005 in window 2) [2 windows]"
    )


def test_a_properties_incident_says_what_changed_in_words(service) -> None:
    from drift.properties import PropertyChange, PropertyExplanation

    def explanation(darker: float) -> PropertyExplanation:
        changes = (
            PropertyChange("brightness", 0.5, 0.5 * (1 - darker), -darker, 1e-9, True),
            PropertyChange("noise", 0.02, 0.044, 1.2, 1e-12, True),
            PropertyChange("contrast", 0.2, 0.2, 0.0, 0.6, False),
        )
        return PropertyExplanation(changes, 0.005)

    with service.store.session() as session:
        stream = Stream(name="s", classes=[0, 1], channels=1, size=8)
        session.add(stream)
        session.flush()
        stream_id = stream.id
    for window, darker in ((12, 0.3), (13, 0.4)):
        result = replace(_grouped({"B": 0.0002}), detector="ks", feature_space="properties")
        with service.store.session() as session:
            record_window(
                session, WindowDrift(stream_id, "s", window, result, [], explanation(darker))
            )
            if window == 12:
                (alert,) = session.scalars(select(Alert)).all()
                assert alert.message == (
                    "covariate shift in group B from window 12 (ks: group B p=0.0002 < 0.005): "
                    "group B's images are 30 % darker and 120 % noisier since window 12"
                )
    with service.store.session() as session:
        (alert,) = session.scalars(select(Alert)).all()
    assert alert.message.endswith(
        "[2 windows]: group B's images are 40 % darker and 120 % noisier since window 12"
    )
    explained = alert.payload["explanation"]
    assert explained["sentence"] == (
        "group B's images are 40 % darker and 120 % noisier since window 12"
    )
    assert explained["properties"]["brightness"]["relative_change"] == pytest.approx(-0.4)
    assert explained["properties"]["contrast"]["drift"] is False


def test_other_feature_spaces_carry_no_explanation(service) -> None:
    alert = _alert_after(service, [_grouped({"B": 0.0002})])
    assert "explanation" not in alert.payload
