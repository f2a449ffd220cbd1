"""The queue path on a real Redis broker with a real Celery worker (in a thread).

The producer is a bare Celery client that sends by task name, as a producer that
does not import learnstream would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.result import AsyncResult
from helpers import REDIS_URL, digit_samples, make_settings
from sqlalchemy import func, select

from service.context import Service, get_service, set_service
from service.errors import InvalidRequest
from service.queries.listings import list_alerts, list_models, status
from service.store.schema import Rejection
from workers.app import QUEUES, configure

DB = 11


@pytest.fixture
def queue_service(tmp_path) -> Iterator[tuple[Service, Celery]]:
    url = f"{REDIS_URL}/{DB}"
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(tmp_path, broker_url=url, result_backend=url, bootstrap_samples=120)
    service = Service.from_settings(settings)
    set_service(service)
    app = configure(settings)
    producer = Celery("producer", broker=url, backend=url)
    producer.conf.update(task_serializer="json", accept_content=["json"])
    with start_worker(
        app, pool="solo", queues=list(QUEUES), perform_ping_check=False, shutdown_timeout=60
    ):
        yield service, producer
    set_service(None)


def _send(producer: Celery, name: str, queue: str, **kwargs: Any) -> AsyncResult:
    return producer.send_task(name, kwargs=kwargs, queue=queue)


def test_mixed_batch_through_the_queue(queue_service) -> None:
    service, producer = queue_service
    good = digit_samples(3)
    batch = [good[0], {"image": "???", "label": 1, "group": "A"}, *good[1:]]
    result = _send(producer, "learnstream.ingest", "ingest", stream="q", samples=batch).get(
        timeout=60
    )
    digits = list("0123456789")
    assert result == {
        "accepted": [s["id"] for s in good],
        "duplicates": [],
        "rejected": [{"index": 1, "reason": "image: not valid base64"}],
        "conflicts": [],
        "created": {"stream": "q", "classes": digits, "channels": 1, "size": 28},
    }
    again = _send(producer, "learnstream.ingest", "ingest", stream="q", samples=good).get(
        timeout=60
    )
    assert again == {
        "accepted": [],
        "duplicates": [s["id"] for s in good],
        "rejected": [],
        "conflicts": [],
        "created": None,
    }
    assert status(service)["streams"]["q"]["samples"] == 3


def test_unreadable_call_fails_once_and_is_recorded(queue_service) -> None:
    service, producer = queue_service
    async_result = _send(producer, "learnstream.ingest", "ingest", stream="q", samples="nope")
    with pytest.raises(Exception, match="samples: must be a list, got str"):
        async_result.get(timeout=60)
    assert async_result.state == "FAILURE"
    unknown = _send(producer, "learnstream.ingest", "ingest", stream="q", samples=[], colour=1)
    with pytest.raises(Exception, match="unknown argument\\(s\\): colour"):
        unknown.get(timeout=60)
    with service.store.session() as session:
        reasons = session.scalars(select(Rejection.reason).order_by(Rejection.id)).all()
        assert reasons == ["samples: must be a list, got str", "unknown argument(s): colour"]
        assert session.scalar(select(func.count()).select_from(Rejection)) == 2


def test_windows_are_processed_and_predict_serves_the_champion(queue_service) -> None:
    service, producer = queue_service
    samples = digit_samples(256, seed=3)
    for start in range(0, 256, 64):
        _send(
            producer,
            "learnstream.ingest",
            "ingest",
            stream="q",
            samples=samples[start : start + 64],
        ).get(timeout=60)
    deadline = time.monotonic() + 120
    while status(service)["streams"]["q"]["windows"]["processed"] < 4:
        assert time.monotonic() < deadline, status(service)
        time.sleep(0.3)
    champion = status(service)["streams"]["q"]["champion"]
    assert champion is not None, [m["gate_report"] for m in list_models(service, "q")]
    images = [s["image"] for s in samples[:5]]
    answer = _send(producer, "learnstream.predict", "predict", stream="q", images=images).get(
        timeout=60
    )
    assert answer["model_version"] == champion
    assert len(answer["predictions"]) == 5
    assert all(len(p["scores"]) == 10 and p["label"] in "0123456789" for p in answer["predictions"])
    assert answer["classes"] == list("0123456789")  # the names of the scores, as the API gives


def test_the_api_and_the_task_record_an_unreadable_call_alike(sqlite_service) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from workers.tasks import ingest_task

    too_many = [{}] * (sqlite_service.settings.max_samples_per_call + 1)
    with pytest.raises(InvalidRequest):
        ingest_task(stream="by-task", samples=too_many)
    with TestClient(create_app(sqlite_service)) as client:
        answer = client.post("/v1/samples", json={"stream": "by-api", "samples": too_many})
    assert answer.status_code == 422
    with sqlite_service.store.session() as session:
        rows = session.execute(
            select(Rejection.stream_name, Rejection.index, Rejection.reason).order_by(Rejection.id)
        ).all()
    reason = f"samples: {len(too_many)} exceed the limit of 1024 per call"
    assert [tuple(r) for r in rows] == [("by-task", None, reason), ("by-api", None, reason)]
    alerts = [(a["subject"], a["payload"]) for a in list_alerts(sqlite_service)]
    payload = {"counts": {reason: 1}, "total": 1}
    assert alerts == [("by-api", payload), ("by-task", payload)]


def test_the_task_and_the_api_queue_closed_windows_alike(sqlite_service, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from workers.app import app, queue_windows
    from workers.tasks import ingest_task

    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(app, "send_task", lambda name, kwargs: sent.append((name, kwargs)))
    size = sqlite_service.settings.window_size
    ingest_task(stream="by-task", samples=digit_samples(2 * size, seed=1))
    by_task, sent[:] = list(sent), []
    with TestClient(create_app(sqlite_service, on_windows_closed=queue_windows)) as client:
        answer = client.post(
            "/v1/samples", json={"stream": "by-api", "samples": digit_samples(2 * size, seed=1)}
        )
    assert answer.status_code == 200, answer.text
    message = ("learnstream.process_window", {"stream": "by-task"})
    assert by_task == [message, message]  # one per closed window
    assert sent == [("learnstream.process_window", {"stream": "by-api"})] * 2


def test_predict_without_a_stream_uses_the_default_stream_setting(tmp_path) -> None:
    from service.errors import StreamNotFound
    from workers.tasks import predict_task

    set_service(Service.from_settings(make_settings(tmp_path, default_stream="team")))
    try:
        with pytest.raises(StreamNotFound, match="unknown stream 'team'"):
            predict_task(images=[digit_samples(1)[0]["image"]])
    finally:
        set_service(None)


def test_ingest_without_a_stream_uses_the_default_stream_setting(tmp_path, monkeypatch) -> None:
    import workers.tasks
    from workers.tasks import ingest_task

    monkeypatch.setattr(workers.tasks, "queue_windows", lambda stream, ids: None)
    set_service(Service.from_settings(make_settings(tmp_path, default_stream="team")))
    try:
        answer = ingest_task(samples=digit_samples(3))
        assert len(answer["accepted"]) == 3
        assert status(get_service())["streams"]["team"]["samples"] == 3
    finally:
        set_service(None)


def test_predict_task_takes_optional_ids_and_groups(tmp_path) -> None:
    from helpers import seeded_champion

    from service.errors import InvalidRequest
    from workers.tasks import predict_task

    service = Service.from_settings(make_settings(tmp_path))
    set_service(service)
    try:
        seeded_champion(service, "t")
        images = [s["image"] for s in digit_samples(2)]
        old = predict_task(stream="t", images=images)
        new = predict_task(stream="t", images=images, ids=["k-1", "k-2"], groups=["A", "B"])
        assert old == new
        with pytest.raises(InvalidRequest, match=r"^groups: 1 given for 2 images"):
            predict_task(stream="t", images=images, groups=["A"])
    finally:
        set_service(None)
