"""``GET /metrics`` after a small real run (ingest over HTTP, windows processed, alerts
delivered to a real webhook receiver): every family is there with the store's values."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import WebhookReceiver, digit_samples, make_settings
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.api.app import create_app
from service.context import Service, set_service
from service.demo.stream import DemoPlan, demo_stream
from service.pipeline.processor import WindowOutcome, process_pending
from service.queries.listings import list_alerts, list_drift, status
from service.queries.metrics import UNKNOWN_STREAM
from service.store.schema import AlertDelivery

PLAN = DemoPlan(windows=5, window_size=64, shift_window=3, corrupted_window=5, bad_samples={2: 4})
S = "demo"


class Scrape:
    """One parsed scrape: values by sample name and labels, types by family."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.values: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values[(name, frozenset(labels.items()))]

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.values if n == name]


@pytest.fixture
def real_run(tmp_path: Path, database_url: str) -> Iterator[dict[str, Any]]:
    with WebhookReceiver([200]) as receiver:
        settings = make_settings(
            tmp_path,
            database_url,
            update_policy="every_window",
            min_bootstrap_accuracy=0.0,  # version 1 serves from window 1 on, whatever it scores
            bootstrap_epochs=8,
            train_epochs=3,
            drift_permutations=100,
            webhook_url=receiver.url,
            webhook_secret="metrics-secret",
        )
        service = Service.from_settings(settings)
        set_service(service)
        started = time.monotonic()
        outcomes: list[WindowOutcome] = []
        with TestClient(create_app(service)) as client:
            for _, samples in demo_stream(PLAN):
                for start in range(0, len(samples), 32):
                    body = {"stream": S, "samples": samples[start : start + 32]}
                    assert client.post("/v1/samples", json=body).status_code == 200
                outcomes += process_pending(service, S)
            unreadable = client.post("/v1/samples", json={"stream": S, "samples": 5})
            assert unreadable.status_code == 422
            # One more window closes and waits for the learner.
            extra = digit_samples(PLAN.window_size, prefix="extra")
            assert client.post("/v1/samples", json={"stream": S, "samples": extra}).json()
            n_alerts = len(list_alerts(service))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with service.store.session() as session:
                    done = session.scalars(
                        select(AlertDelivery.status).where(AlertDelivery.status == "delivered")
                    ).all()
                if len(done) == n_alerts:
                    break
                time.sleep(0.05)
            response = client.get("/metrics")
            elapsed = time.monotonic() - started
        yield {
            "service": service,
            "outcomes": outcomes,
            "response": response,
            "elapsed": elapsed,
            "receiver": receiver,
        }
        set_service(None)


def test_every_family_has_the_stores_values_after_a_real_run(real_run: dict[str, Any]) -> None:
    service: Service = real_run["service"]
    outcomes: list[WindowOutcome] = real_run["outcomes"]
    response = real_run["response"]
    assert response.status_code == 200
    m = Scrape(response.text)
    state = status(service)["streams"][S]

    # Ingest: accepted, and rejected by the field at fault (a whole call is "call").
    assert m.types["learnstream_samples_accepted"] == "counter"
    assert m("learnstream_samples_accepted_total", stream=S) == state["samples"]
    assert state["samples"] == PLAN.windows * PLAN.window_size + PLAN.window_size
    rejected = {
        labels["reason"]: m("learnstream_samples_rejected_total", **labels)
        for labels in m.labels_of("learnstream_samples_rejected_total")
        if labels["stream"] == S
    }
    assert rejected == {
        "image": 2,
        "label": 1,
        "group": 1,
        "call": 1,
        "id": 0,
        "meta": 0,
        "sample": 0,
        "other": 0,
    }
    assert m("learnstream_samples_rejected_total", stream=UNKNOWN_STREAM, reason="call") == 0

    # Windows: processed, one waiting, and the learner's lag behind it.
    assert m("learnstream_windows_processed_total", stream=S) == PLAN.windows == len(outcomes)
    assert m("learnstream_windows", stream=S, state="closed") == 1
    assert m("learnstream_windows", stream=S, state="open") == 0
    assert 0 < m("learnstream_learner_lag_seconds", stream=S) < real_run["elapsed"]

    # Drift: verdict counts, and the latest test of each kind.
    drift = list_drift(service, S)
    verdicts = Counter(
        (r["kind"], "drift" if r["verdict"] == "drift" else "no_drift") for r in drift
    )
    for kind in ("covariate", "label", "concept"):
        for verdict in ("drift", "no_drift"):
            value = m("learnstream_drift_verdicts_total", stream=S, kind=kind, verdict=verdict)
            assert value == verdicts[(kind, verdict)], (kind, verdict)
    assert {kind for kind, _ in verdicts} == {"covariate", "label", "concept"}
    latest = {r["kind"]: r for r in drift}  # oldest first: the last one of each kind wins
    for kind, report in latest.items():
        assert m("learnstream_drift_statistic", stream=S, kind=kind) == report["statistic"]
        if report["p_value"] is not None:
            assert m("learnstream_drift_p_value", stream=S, kind=kind) == report["p_value"]
        for group, verdict in report["per_group"].items():
            if verdict.get("p_value") is not None:
                value = m("learnstream_drift_group_p_value", stream=S, kind=kind, group=group)
                assert value == verdict["p_value"]
    assert latest["covariate"]["p_value"] is not None
    assert {"A", "B"} <= {
        labels["group"] for labels in m.labels_of("learnstream_drift_group_p_value")
    }

    # The champion: version, and its prequential accuracy on the last window it served.
    assert m("learnstream_champion_version", stream=S) == state["champion"]
    accuracy = outcomes[-1].prequential_accuracy
    assert m("learnstream_champion_accuracy", stream=S) == accuracy["overall"]
    for group in ("A", "B"):
        assert m("learnstream_champion_group_accuracy", stream=S, group=group) == accuracy[group]

    # Gate decisions (version 1's bootstrap check included).
    decided = Counter(o.gate_passed for o in outcomes if o.gate_passed is not None)
    assert decided[True] >= 1 and sum(decided.values()) == PLAN.windows
    assert m("learnstream_gate_decisions_total", stream=S, decision="promoted") == decided[True]
    assert m("learnstream_gate_decisions_total", stream=S, decision="rejected") == decided[False]

    # Durations: summaries over every stored timing.
    for family, stage in (("update", "update"), ("gate", "gate"), ("window", "total")):
        name = f"learnstream_{family}_duration_seconds"
        assert m.types[name] == "summary"
        timed = [o.seconds[stage] for o in outcomes if stage in o.seconds]
        assert timed and m(f"{name}_count", stream=S) == len(timed)
        assert m(f"{name}_sum", stream=S) == pytest.approx(sum(timed), rel=1e-6)
    for kind in ("covariate", "label", "concept"):
        seconds = [r["seconds"] for r in drift if r["kind"] == kind]
        labels = {"stream": S, "kind": kind}
        assert m("learnstream_drift_duration_seconds_count", **labels) == len(seconds)
        assert m("learnstream_drift_duration_seconds_sum", **labels) == pytest.approx(
            sum(seconds), abs=1e-3
        )

    # Alerts: open ones by kind, and every one delivered once to the webhook.
    alerts = list_alerts(service)
    by_kind = Counter(a["kind"] for a in alerts)
    assert by_kind["ingest.rejected"] == 1 and sum(by_kind.values()) >= 2
    open_by_kind = Counter(a["kind"] for a in alerts if not a["acknowledged"])
    for kind in by_kind:
        assert m("learnstream_alerts_open", kind=kind) == open_by_kind[kind]
    # Champion changes are events, acknowledged as raised: delivered, never open.
    assert by_kind["model.promoted"] >= 2 and open_by_kind["model.promoted"] == 0
    assert m("learnstream_alert_deliveries_total", sink="webhook", status="delivered") == len(
        alerts
    )
    assert m("learnstream_alert_deliveries_total", sink="webhook", status="failed") == 0
    assert m("learnstream_alert_deliveries_pending", sink="webhook") == 0
    assert m("learnstream_alert_delivery_attempts_total", sink="webhook") == len(alerts)
    assert len(real_run["receiver"].requests) == len(alerts)
    assert m("learnstream_store_up") == 1


def test_rejections_naming_no_stream_get_a_label_of_their_own(sqlite_service: Service) -> None:
    with TestClient(create_app(sqlite_service)) as client:
        client.post("/v1/samples", json={"stream": "s", "samples": digit_samples(2)})
        assert client.post("/v1/samples", json={"samples": 5}).status_code == 422
        assert client.post("/v1/samples", content=b"{not json").status_code == 422
        m = Scrape(client.get("/metrics").text)
    streams = {labels["stream"] for labels in m.labels_of("learnstream_samples_rejected_total")}
    assert streams == {"s", "(unknown)"}  # no stream="" rows
    assert m("learnstream_samples_rejected_total", stream="(unknown)", reason="call") == 2
    assert m("learnstream_samples_rejected_total", stream="s", reason="call") == 0


def test_served_accuracy_and_label_delay_are_scraped_as_status_reports_them(
    sqlite_service: Service,
) -> None:
    from helpers import seeded_champion

    from service.models.serving import predict_images

    seeded_champion(sqlite_service, "s")
    samples = digit_samples(6, seed=9, prefix="m")
    images, ids = [s["image"] for s in samples], [s["id"] for s in samples]
    predict_images(sqlite_service, "s", images, ids=ids, groups=[s["group"] for s in samples])
    ingest_samples = samples[:4]
    with TestClient(create_app(sqlite_service)) as client:
        client.post("/v1/samples", json={"stream": "s", "samples": ingest_samples})
        m = Scrape(client.get("/metrics").text)
    served = status(sqlite_service)["streams"]["s"]["served"]
    assert served["labelled"] == 4
    assert m("learnstream_traffic_rows", stream="s") == 6
    assert m("learnstream_served_labelled", stream="s", group="(all)") == 4
    assert m("learnstream_served_accuracy", stream="s", group="(all)") == served["accuracy"]
    for group, tally in served["by_group"].items():
        assert m("learnstream_served_accuracy", stream="s", group=group) == tally["accuracy"]
        assert m("learnstream_served_labelled", stream="s", group=group) == tally["n"]
    assert m.types["learnstream_label_delay_seconds"] == "summary"
    assert m("learnstream_label_delay_seconds_count", stream="s") == 4
    delay = served["label_delay_s"]
    assert m("learnstream_label_delay_seconds", stream="s", quantile="0.5") == delay["p50"]
    assert m("learnstream_label_delay_seconds", stream="s", quantile="0.9") == delay["p90"]
