"""The webhook alert sink against a real HTTP receiver on localhost, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import WebhookReceiver, closed_port_url, digit_samples, make_settings
from pydantic import ValidationError
from sqlalchemy import select, text

from service.alerts.records import raise_alert
from service.alerts.webhook import WebhookSink
from service.config import Settings
from service.context import Service
from service.ingest.samples import ingest
from service.queries.listings import list_alerts
from service.store.engine import Store
from service.store.removal import delete_stream
from service.store.schema import Alert, AlertDelivery, utcnow

SECRET = "webhook-test-secret"
BAD = {"image": "not base64!", "label": 1, "group": "A"}


def webhook_service(
    tmp_path: Path, database_url: str | None, url: str, **overrides: Any
) -> Service:
    values = {
        "webhook_url": url,
        "webhook_secret": SECRET,
        "webhook_timeout": 2.0,
        "webhook_max_attempts": 4,
        "webhook_backoff": 0.05,
        **overrides,
    }
    return Service.from_settings(make_settings(tmp_path, database_url, **values))


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made: list[Service] = []
    yield made
    for service in made:
        service.close()


def deliveries(service: Service) -> list[AlertDelivery]:
    with service.store.session() as session:
        return list(session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))


def wait_settled(service: Service, n: int, timeout: float = 20.0) -> list[AlertDelivery]:
    """The delivery rows once ``n`` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = deliveries(service)
        if len([r for r in rows if r.status != "pending"]) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"deliveries did not settle: {[(r.status, r.attempts) for r in rows]}")


def reject_one(service: Service, stream: str = "w") -> int:
    """Ingest one bad sample with good ones: ingest raises an ``ingest.rejected`` alert."""
    result = ingest(service.store, service.settings, stream, [*digit_samples(3), BAD])
    assert len(result.rejected) == 1
    (alert,) = [a for a in list_alerts(service) if a["subject"] == stream]
    return alert["id"]


def test_retries_5xx_signs_every_attempt_and_records_the_delivery(
    tmp_path: Path, database_url: str, services: list[Service]
) -> None:
    observer = Store(database_url)

    def committed(headers: dict[str, str], body: bytes) -> bool:
        # Another connection sees the alert: it was delivered after its transaction committed.
        with observer.engine.connect() as conn:
            alert_id = int(headers["x-learnstream-alert-id"])
            return conn.execute(text(f"SELECT count(*) FROM alerts WHERE id = {alert_id}")).scalar()

    with WebhookReceiver([500, 503, 200], inspect=committed) as receiver:
        service = webhook_service(tmp_path, database_url, receiver.url)
        services.append(service)
        alert_id = reject_one(service)
        (row,) = wait_settled(service, 1)
    observer.dispose()

    assert (row.alert_id, row.sink, row.status) == (alert_id, "webhook", "delivered")
    assert (row.attempts, row.last_status_code, row.last_error) == (3, 200, None)
    assert row.delivered_at is not None
    assert len(receiver.requests) == 3
    for attempt, request in enumerate(receiver.requests, start=1):
        headers, body = request["headers"], request["body"]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-learnstream-signature"], expected)
        wrong = "sha256=" + hmac.new(b"another secret", body, hashlib.sha256).hexdigest()
        assert headers["x-learnstream-signature"] != wrong
        assert headers["content-type"] == "application/json"
        assert headers["x-learnstream-alert-id"] == str(alert_id)
        assert request["seen"] == 1
        payload = json.loads(body)
        assert payload["attempt"] == attempt and payload["source"] == "learnstream"
        assert payload["alert"]["id"] == alert_id and payload["alert"]["stream"] == "w"
        assert payload["alert"]["kind"] == "ingest.rejected"
        assert payload["alert"]["payload"]["total"] == 1
        assert abs(int(headers["x-learnstream-timestamp"]) - time.time()) < 60

    # The delivery record goes with its alert when the stream is deleted.
    assert delete_stream(service.store, service.registry.model_dir, "w")
    assert deliveries(service) == []


@pytest.mark.parametrize("where", ["answers 500", "nothing listens"])
def test_when_every_attempt_fails_the_delivery_is_failed_and_the_alert_stays(
    tmp_path: Path, services: list[Service], where: str
) -> None:
    with WebhookReceiver([500]) as receiver:
        url = receiver.url if where == "answers 500" else closed_port_url()
        service = webhook_service(tmp_path, None, url, webhook_max_attempts=3)
        services.append(service)
        alert_id = reject_one(service)
        (row,) = wait_settled(service, 1)

    assert (row.alert_id, row.status, row.attempts, row.delivered_at) == (
        alert_id,
        "failed",
        3,
        None,
    )
    if where == "answers 500":
        assert len(receiver.requests) == 3
        assert row.last_status_code == 500 and row.last_error.startswith("HTTP 500")
    else:
        assert receiver.requests == []
        assert row.last_status_code is None and "ConnectError" in row.last_error
    (alert,) = [a for a in list_alerts(service) if a["id"] == alert_id]
    assert alert["kind"] == "ingest.rejected" and not alert["acknowledged"]


def test_a_4xx_answer_is_not_retried(tmp_path: Path, services: list[Service]) -> None:
    with WebhookReceiver([400, 200]) as receiver:
        service = webhook_service(tmp_path, None, receiver.url)
        services.append(service)
        reject_one(service)
        (row,) = wait_settled(service, 1)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, 400)
    assert len(receiver.requests) == 1


def test_a_slow_receiver_does_not_delay_the_work_that_raised_the_alert(
    tmp_path: Path, services: list[Service]
) -> None:
    with WebhookReceiver([200], delay=1.5) as receiver:
        service = webhook_service(tmp_path, None, receiver.url, webhook_timeout=10.0)
        services.append(service)
        reject_one(service)
        # Ingest has returned while the receiver still holds the request.
        assert [r.status for r in deliveries(service)] in ([], ["pending"])
        (row,) = wait_settled(service, 1)
    assert row.status == "delivered" and row.attempts == 1


def test_alerts_of_a_rolled_back_transaction_are_never_sent(
    tmp_path: Path, services: list[Service]
) -> None:
    with WebhookReceiver([200]) as receiver:
        service = webhook_service(tmp_path, None, receiver.url)
        services.append(service)
        fields = {"stream_id": None, "severity": "warning", "subject": "s", "payload": {}}
        with pytest.raises(RuntimeError), service.store.session() as session:
            raise_alert(session, kind="update.failed", message="rolled back", **fields)
            raise RuntimeError("the transaction fails after raising the alert")
        with service.store.session() as session:
            kept = raise_alert(session, kind="update.failed", message="committed", **fields)
        (row,) = wait_settled(service, 1)  # queued after the other one would have been
    assert row.alert_id == kept.id and row.status == "delivered"
    assert [json.loads(r["body"])["alert"]["message"] for r in receiver.requests] == ["committed"]


def test_a_sweep_delivers_alerts_a_dead_process_left_behind_exactly_once(
    tmp_path: Path, database_url: str, services: list[Service]
) -> None:
    # A process without the sink raises alerts (as one that died before delivering would).
    plain = Service.from_settings(make_settings(tmp_path, database_url))
    services.append(plain)
    first = reject_one(plain, "a")
    second = reject_one(plain, "b")
    with plain.store.session() as session:  # the second one's owner died mid-way, long ago
        session.add(
            AlertDelivery(
                alert_id=second,
                sink="webhook",
                status="pending",
                attempts=2,
                updated_at=utcnow() - timedelta(hours=1),
            )
        )
        session.get(Alert, first).created_at = utcnow() - timedelta(minutes=5)

    with WebhookReceiver([200]) as receiver:
        settings = make_settings(
            tmp_path, database_url, webhook_url=receiver.url, webhook_secret=SECRET
        )
        sink = WebhookSink(plain.store, settings, grace=60.0)
        other = WebhookSink(plain.store, settings, grace=60.0)
        assert sink.sweep() == 2
        assert other.sweep() == 0  # both claimed: another process finds nothing left
        assert sink.deliver(first) is None and other.deliver(second) is None
    rows = {r.alert_id: r for r in deliveries(plain)}
    assert rows[first].status == "delivered" and rows[first].attempts == 1
    assert rows[second].status == "delivered" and rows[second].attempts == 3
    assert sorted(json.loads(r["body"])["alert"]["id"] for r in receiver.requests) == [
        first,
        second,
    ]


def test_webhook_settings_are_validated(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert Settings(home=home, webhook_url="", webhook_secret="").webhook_url is None
    with pytest.raises(ValidationError, match="needs webhook_secret"):
        Settings(home=home, webhook_url="https://hooks.example/x")
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(home=home, webhook_url="ftp://hooks.example/x", webhook_secret=SECRET)
    settings = Settings(home=home, webhook_url="https://hooks.example/x", webhook_secret=SECRET)
    assert SECRET not in repr(settings)


def test_a_champion_swap_reaches_the_webhook_as_an_event(
    tmp_path: Path, services: list[Service]
) -> None:
    """``model.promoted`` carries what a deployment needs to pull the new champion."""
    from learners.models import build_model
    from learners.strategy_state import StrategyState
    from service.ingest.samples import get_or_create_stream
    from service.models.promotion import promote

    with WebhookReceiver([200]) as receiver:
        service = webhook_service(tmp_path, None, receiver.url)
        services.append(service)
        stream = get_or_create_stream(service.store, "w", service.settings).stream
        model = build_model(n_classes=10, in_channels=1, input_size=28, seed=0)
        state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
        version = service.registry.create_version(
            stream, model, state, parent=None, strategy="naive", params={}, windows=[1],
            arch=model.arch,
        )  # fmt: skip
        promote(service, "w", version, by="alice", reason="first")
        (row,) = wait_settled(service, 1)
        assert row.status == "delivered"
        (request,) = receiver.requests
    alert = json.loads(request["body"])["alert"]
    folder = service.registry.folder("w", version)
    assert alert["kind"] == "model.promoted" and alert["severity"] == "info"
    assert alert["acknowledged"] and alert["acknowledged_by"] == "learnstream"
    assert alert["payload"]["artifact"] == str(folder / "model.safetensors")
    digests = json.loads((folder / "manifest.json").read_text())["digests"]
    assert alert["payload"]["digest"] == digests["model.safetensors"]
    assert (alert["payload"]["version"], alert["payload"]["by"]) == (version, "alice")
