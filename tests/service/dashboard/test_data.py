"""The dashboard's read model and rendering on a real SQLite store: incidents (old and new
alert payloads), their samples, gate summaries, and the live page against the report."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import digit_samples
from sqlalchemy import select

from service.alerts import records as alerts
from service.context import Service
from service.dashboard.data import (
    gate_summary,
    incident_samples,
    incidents,
    stream_data,
    streams_overview,
)
from service.dashboard.views import render_stream, report_data, write_report
from service.errors import StreamNotFound
from service.ingest.samples import ingest
from service.pipeline.gate import GateSettings, run_gate
from service.store.schema import Sample, Stream


@pytest.fixture
def stored(sqlite_service: Service) -> Service:
    """Two closed windows of 64 digits (groups A and B) in stream ``s``."""
    samples = digit_samples(128, seed=3, prefix="d")
    for start in range(0, 128, 64):
        ingest(sqlite_service.store, sqlite_service.settings, "s", samples[start : start + 64])
    return sqlite_service


def _raise(service: Service, kind: str, payload: dict) -> int:
    with service.store.session() as session:
        stream_id = session.scalar(select(Stream.id).where(Stream.name == "s"))
        return alerts.raise_alert(
            session,
            stream_id=stream_id,
            kind=kind,  # type: ignore[arg-type]
            severity="warning",
            subject="s",
            message=f"{kind} test",
            payload=payload,
        ).id


def _sample_ids(service: Service, group: str) -> list[str]:
    with service.store.session() as session:
        return list(
            session.scalars(
                select(Sample.sample_id).where(Sample.group == group).order_by(Sample.seq)
            )
        )


def test_incident_alert_payload_is_read_with_its_shifted_samples(stored: Service) -> None:
    b = _sample_ids(stored, "B")
    named = [b[5], b[1], "no-such-sample"]
    alert_id = _raise(
        stored,
        "drift.covariate",
        {
            "incident": {"windows": [1, 2], "open": True},
            "group": "B",
            "p_values": [0.0, 0.002],
            "shifted_samples": named,
        },
    )
    data = stream_data(stored, "s")
    (incident,) = data["incidents"]
    assert incident["alert"] == alert_id and incident["kind"] == "covariate"
    assert incident["windows"] == [1, 2] and incident["open"] is True
    assert incident["group"] == "B" and incident["p_values"] == [0.0, 0.002]
    assert incident["shifted_samples"] == named

    samples, source = incident_samples(stored, "s", incident)
    assert source == "shifted"
    assert [s.sample_id for s in samples] == named[:2]  # in the alert's order, unknown skipped
    with stored.store.session() as session:
        pixels = session.scalar(select(Sample.pixels).where(Sample.sample_id == named[0]))
    assert samples[0].pixels.shape == (1, 28, 28)
    assert np.array_equal(samples[0].pixels.ravel(), np.frombuffer(pixels, dtype=np.uint8))
    assert samples[0].group == "B" and samples[0].window in (1, 2)


def test_older_drift_alerts_fall_back_to_their_window_and_group(stored: Service) -> None:
    _raise(stored, "drift.label", {"window": 2, "groups": ["B"], "p_value": 0.001})
    (incident,) = stream_data(stored, "s")["incidents"]
    assert incident["windows"] == [2] and incident["open"] is None
    assert incident["group"] == "B" and incident["p_values"] == [0.001]
    assert incident["shifted_samples"] == []

    samples, source = incident_samples(stored, "s", incident)
    assert source == "window"
    assert 0 < len(samples) <= 8
    assert {s.group for s in samples} == {"B"} and {s.window for s in samples} == {2}


def test_malformed_payloads_and_other_alerts_do_not_break_incidents() -> None:
    rows = [
        {"id": 3, "kind": "drift.concept", "message": "m", "time": "t", "acknowledged": True,
         "payload": {"incident": "x", "p_values": "nope", "shifted_samples": [1, None, "ok"],
                     "window": "7", "group": 5}},
        {"id": 2, "kind": "fairness.regression", "message": "m", "time": "t",
         "acknowledged": False, "payload": {"window": 4}},
        {"id": 1, "kind": "drift.covariate", "message": "m", "time": "t",
         "acknowledged": False, "payload": None},
    ]  # fmt: skip
    found = incidents(rows)
    assert [i["alert"] for i in found] == [3, 1]
    assert found[0]["windows"] == [] and found[0]["p_values"] == []
    assert found[0]["shifted_samples"] == ["ok"] and found[0]["group"] is None
    assert found[1]["windows"] == [] and found[1]["open"] is None


def test_gate_summary_has_one_shape_for_every_writer() -> None:
    assert gate_summary(None) is None
    boot = gate_summary({"bootstrap": True, "accuracy": 0.9, "n": 40})
    assert boot["kind"] == "bootstrap" and boot["accuracy"] == 0.9
    failed = gate_summary({"error": "RuntimeError: boom"})
    assert failed["kind"] == "error" and failed["reasons"] == ["RuntimeError: boom"]

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    groups = np.array(["A", "B"] * 300)
    candidate = np.where(groups == "B", (y + 1) % 10, y)  # wrong on every B sample
    report = run_gate(y, y, candidate, groups, np.ones(600), GateSettings()).to_dict()
    gate = gate_summary(report)
    assert gate["kind"] == "gate" and gate["passed"] is False
    by_group = {c["subject"]: c for c in gate["groups"]}
    assert by_group["B"]["verdict"] == "fail" and by_group["A"]["verdict"] == "pass"
    assert by_group["B"]["difference"] == pytest.approx(-1.0)
    assert by_group["B"]["low"] <= by_group["B"]["difference"] <= by_group["B"]["high"]


def test_live_page_and_report_render_the_same_stream(stored: Service, tmp_path) -> None:
    b = _sample_ids(stored, "B")
    alert_id = _raise(
        stored,
        "drift.covariate",
        {"incident": {"windows": [2], "open": False}, "group": "B", "p_values": [0.0],
         "shifted_samples": b[:3]},
    )  # fmt: skip
    live = render_stream(stored, "s", live=True)
    assert f'id="alert-{alert_id}"' in live and 'class="ack"' in live and "<script>" in live
    incident = live.split('id="incidents"')[1].split("</section>")[0]
    assert len(re.findall(r'<img src="data:image/png;base64,', incident)) == 3

    (tmp_path / "out").mkdir()
    path = write_report(stored, "s", tmp_path / "out")  # a folder: the default name inside it
    assert path == (tmp_path / "out" / "learnstream-report-s.html").resolve()
    named = write_report(stored, "s", tmp_path / "new" / "r.html")  # a file, folders made
    assert named == (tmp_path / "new" / "r.html").resolve() and named.is_file()
    report = path.read_text()
    assert "<script" not in report and 'class="ack"' not in report
    sources = re.findall(r'(?:src|href)="([^"]*)"', report)
    assert sources and all(s.startswith("data:") for s in sources)
    assert "No drift reports yet" in report  # no window was processed: no drift figure


def test_unknown_stream_and_overview(stored: Service) -> None:
    with pytest.raises(StreamNotFound):
        stream_data(stored, "nope")
    (row,) = streams_overview(stored)
    assert row["stream"] == "s" and row["champion"] is None and row["windows_processed"] == 0


def test_an_incident_is_titled_by_every_group_that_drifted(stored: Service) -> None:
    b = _sample_ids(stored, "B")
    _raise(
        stored,
        "drift.covariate",
        {"incident": {"windows": [1, 2], "open": True}, "group": "A", "groups": ["A", "B"],
         "p_values": [0.001, 0.0002], "shifted_samples": b[:2],
         "shifted_from": {"window": 2, "groups": ["B"]}},
    )  # fmt: skip
    (incident,) = stream_data(stored, "s")["incidents"]
    assert incident["title"] == "covariate drift in groups A, B"
    assert incident["shifted_from"] == {"window": 2, "groups": ["B"]}
    page = render_stream(stored, "s", live=False)
    section = page.split('id="incidents"')[1].split("</section>")[0]
    assert "covariate drift in groups A, B, window(s) 1, 2" in section
    assert "most shifted samples named by the alert (window 2, group B)" in section
    assert "drift in group A" not in section
    (explained,) = [e for e in report_data(stored, "s")["explanations"] if e["kind"] == "incident"]
    assert explained["title"].startswith("covariate drift in groups A, B, window(s) 1, 2")


def test_versions_list_their_windows_by_number(stored: Service) -> None:
    from learners.models import build_model
    from learners.strategy_state import StrategyState
    from service.ingest.samples import get_or_create_stream
    from service.store.schema import Window

    ingest(stored.store, stored.settings, "t", digit_samples(64, seed=4, prefix="t"))
    with stored.store.session() as session:
        ids = list(session.scalars(select(Window.id).join(Stream).where(Stream.name == "t")))
    assert ids != [1]  # stream s's windows came first: ids are not numbers
    stream = get_or_create_stream(stored.store, "t", stored.settings).stream
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    arch = {"n_classes": 10, "in_channels": 1, "input_size": 28}
    stored.registry.create_version(
        stream, build_model(seed=0, **arch), state, parent=None, strategy="naive", params={},
        windows=ids, arch=arch,
    )  # fmt: skip
    (version,) = stream_data(stored, "t")["versions"]
    assert version["windows"] == [1]


def test_the_quarantine_section_shows_held_samples_with_thumbnails(
    stored: Service, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import hold_by_hand, hold_window_by_hand

    from service.dashboard import data as dashboard_data
    from service.quarantine.records import decide
    from service.store.schema import Window

    with stored.store.session() as session:
        rows = session.execute(
            select(Sample.id, Sample.sample_id, Sample.label, Sample.group)
            .join(Window, Window.id == Sample.window_id)
            .where(Window.seq == 1)
            .order_by(Sample.seq)
            .limit(4)
        ).all()
    hold_window_by_hand(stored, "s", 2, "candidate v2 rejected under label drift")
    hold_by_hand(stored, "s", 1, [tuple(r) for r in rows])
    ids = [r.sample_id for r in rows]
    decide(stored.store, "s", "released", ids=[ids[0]], by="alice")
    decide(stored.store, "s", "confirmed", ids=[ids[1]], by="bob")

    held = stream_data(stored, "s")["quarantine"]
    assert (held["held_samples"], held["held_windows"]) == (2, 1)
    assert (held["released"], held["confirmed"]) == (1, 1)
    assert [q["sample"] for q in held["samples"]] == [ids[3], ids[2]]  # newest first
    newest = held["samples"][0]
    assert newest["given"] == str(rows[3].label)
    assert newest["believed"] == str((rows[3].label + 1) % 10)
    assert newest["group"] == rows[3].group and newest["score"] == pytest.approx(0.04)
    assert [(w["window"], w["reason"]) for w in held["windows"]] == [
        (2, "candidate v2 rejected under label drift")
    ]

    def section(page: str) -> str:
        return page.split('id="quarantine"')[1].split("</section>")[0]

    live = section(render_stream(stored, "s", live=True))
    assert "2 sample(s) and 1 window(s) held out of learning · 1 released · 1 confirmed" in live
    assert len(re.findall(r'<img src="data:image/png;base64,', live)) == 2  # held: loadable
    caption = (
        f"{ids[3]}<br>group {rows[3].group} · window 1<br>labelled <b>{rows[3].label}</b>, "
        f"believed <b>{(rows[3].label + 1) % 10}</b><br>score 0.040"
    )
    assert caption in live
    assert 'id="held-window-2"' in live and "candidate v2 rejected under label drift" in live
    assert ids[0] not in live and ids[1] not in live  # decided: no longer shown
    assert "The newest" not in live

    monkeypatch.setattr(dashboard_data, "HELD_SAMPLES_SHOWN", 1)
    report = write_report(stored, "s", tmp_path / "r.html").read_text()
    assert "<script" not in report
    assert all(s.startswith("data:") for s in re.findall(r'(?:src|href)="([^"]*)"', report))
    bounded = section(report)
    assert len(re.findall(r'<img src="data:image/png;base64,', bounded)) == 1
    assert ids[3] in bounded and ids[2] not in bounded
    assert "The newest 1 of 2 held samples." in bounded
    assert report_data(stored, "s")["quarantine"]["samples"][0]["sample"] == ids[3]
