"""The HTTP API over a real SQLite store: contract shapes, auth, errors, limits, metrics."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import NO_TRAFFIC, NO_TRAFFIC_DRIFT, held_stream
from sqlalchemy import select
from torchvision.io import encode_png

import service.api.app as api
from learners.models import build_model
from learners.strategy_state import StrategyState
from service.api.app import create_app
from service.config import Settings
from service.context import Service, set_service
from service.errors import InsecureBind, StoreUnavailable
from service.ingest.samples import get_or_create_stream
from service.store.schema import Champion

TOKEN = "s3cret-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARCH = {"n_classes": 10, "in_channels": 1, "input_size": 28}


def png_base64(seed: int, size: int = 28) -> str:
    """A real PNG of seeded random uint8 pixels."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=generator)
    return base64.b64encode(encode_png(pixels).numpy().tobytes()).decode()


def good_samples(n: int, *, start: int = 0, prefix: str = "x") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}-{k}", "image": png_base64(k), "label": k % 10, "group": "AB"[k % 2]}
        for k in range(start, start + n)
    ]


def make_service(tmp_path: Path, **overrides: Any) -> Service:
    values: dict[str, Any] = {"home": tmp_path / "home", "operator_token": TOKEN, **overrides}
    return Service.from_settings(Settings(**values))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = make_service(tmp_path, window_size=8, max_samples_per_call=16)
    yield svc
    svc.close()


@pytest.fixture
def closed_calls() -> list[tuple[str, list[int]]]:
    return []


@pytest.fixture
def client(service: Service, closed_calls: list) -> Iterator[TestClient]:
    app = create_app(service, on_windows_closed=lambda s, ids: closed_calls.append((s, ids)))
    with TestClient(app) as test_client:
        yield test_client


def write_version(service: Service, stream_name: str, seed: int, parent: int | None = None) -> int:
    stream = get_or_create_stream(service.store, stream_name, service.settings).stream
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    return service.registry.create_version(
        stream,
        build_model(seed=seed, **ARCH),
        state,
        parent=parent,
        strategy="naive",
        params={},
        windows=[1],
        arch=ARCH,
    )


def assert_error(response: Any, status: int, kind: str, *, contains: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert contains in body["detail"], body
    return body


# --------------------------------------------------------------------------------------------
# Ingest


def test_samples_accepts_the_good_and_rejects_the_bad_at_their_index(
    client: TestClient, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.ingest.samples as ingest_module

    calls = []
    real_ingest = ingest_module.ingest

    def spy(*args: Any) -> Any:
        calls.append(args[2:])
        return real_ingest(*args)

    monkeypatch.setattr(ingest_module, "ingest", spy)
    good = good_samples(3)
    bad = [
        {"image": "%%%", "label": 1, "group": "A"},
        {"image": good[0]["image"], "label": 10, "group": "A"},
        {"image": good[0]["image"], "label": 1},
        "not an object",
    ]
    body = {"stream": "s", "samples": [good[0], *bad, *good[1:]]}
    response = client.post("/v1/samples", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": ["x-0", "x-1", "x-2"],
        "duplicates": [],
        "rejected": [
            {"index": 1, "reason": "image: not valid base64"},
            {"index": 2, "reason": "label: 10 is outside the stream's 10 classes"},
            {"index": 3, "reason": "group: missing"},
            {"index": 4, "reason": "sample: must be an object, got str"},
        ],
        "conflicts": [],
        "created": {"stream": "s", "classes": list("0123456789"), "channels": 1, "size": 28},
    }
    assert calls == [("s", body["samples"])]  # the very function the ingest task calls

    again = client.post("/v1/samples", json={"stream": "s", "samples": good[:2]})
    assert again.json() == {
        "accepted": [],
        "duplicates": ["x-0", "x-1"],
        "rejected": [],
        "conflicts": [],
        "created": None,
    }
    streams = client.get("/v1/status").json()["streams"]
    assert streams["s"]["samples"] == 3 and streams["s"]["rejected"] == 4


def test_closed_windows_are_handed_on_and_listed(
    client: TestClient, closed_calls: list, service: Service
) -> None:
    response = client.post("/v1/samples", json={"stream": "w", "samples": good_samples(10)})
    assert len(response.json()["accepted"]) == 10
    assert len(closed_calls) == 1
    stream, window_ids = closed_calls[0]
    assert stream == "w" and len(window_ids) == 1
    windows = client.get("/v1/windows", params={"stream": "w"}).json()
    assert [(w["seq"], w["state"], w["size"]) for w in windows] == [
        (1, "closed", 8),
        (2, "open", 2),
    ]
    assert windows[0]["closed_at"] and windows[1]["closed_at"] is None
    assert set(windows[0]) == {
        "seq",
        "state",
        "size",
        "opened_at",
        "closed_at",
        "processed_at",
        "champion_version",
        "drifted",
        "summary",
    }


def test_a_failing_window_hook_does_not_lose_the_call(tmp_path: Path) -> None:
    svc = make_service(tmp_path, window_size=8)

    def broken(stream: str, ids: list[int]) -> None:
        raise ConnectionError("broker down")

    with TestClient(create_app(svc, on_windows_closed=broken)) as client:
        response = client.post("/v1/samples", json={"stream": "w", "samples": good_samples(8)})
        assert response.status_code == 200 and len(response.json()["accepted"]) == 8
        windows = client.get("/v1/windows", params={"stream": "w"}).json()
        assert windows[0]["state"] == "closed"
    svc.close()


def test_unreadable_calls_are_422_and_recorded(client: TestClient) -> None:
    client.post("/v1/samples", json={"stream": "s", "samples": good_samples(1)})
    too_many = client.post("/v1/samples", json={"stream": "s", "samples": [{}] * 17})
    assert_error(too_many, 422, "invalid_request", contains="exceed the limit of 16")
    unknown = client.post("/v1/samples", json={"stream": "s", "samples": [], "colour": 1})
    body = assert_error(unknown, 422, "invalid_request", contains="colour")
    assert body["errors"][0]["loc"] == ["body", "colour"]
    not_a_list = client.post("/v1/samples", json={"stream": "s", "samples": "nope"})
    assert_error(not_a_list, 422, "invalid_request", contains="body.samples")
    assert client.get("/v1/status").json()["streams"]["s"]["rejected"] == 3
    alerts = [
        (a["kind"], a["subject"], a["payload"]["total"]) for a in client.get("/v1/alerts").json()
    ]
    assert alerts == [("ingest.rejected", "s", 3)]


# --------------------------------------------------------------------------------------------
# Reads


def test_status_shape(client: TestClient, service: Service) -> None:
    from service.queries.listings import status

    assert client.get("/v1/status").json() == {"streams": {}}
    client.post("/v1/samples", json={"stream": "s", "samples": good_samples(3)})
    answer = client.get("/v1/status").json()
    backlog = answer["streams"]["s"].pop("backlog")
    assert answer == {
        "streams": {
            "s": {
                "samples": 3,
                "rejected": 0,
                "windows": {"open": 1, "closed": 0, "processed": 0},
                "champion": None,
                "adaptation": None,
                "quarantined": {"samples": 0, "windows": 0},
                "served": NO_TRAFFIC,
                "traffic_drift": NO_TRAFFIC_DRIFT,
            }
        }
    }
    assert set(backlog) == set(status(service)["streams"]["s"]["backlog"])  # as status --json
    assert backlog["samples_waiting"] == 3 and backlog["windows_queued"] == 0
    assert backlog["learner_lag_s"] == 0
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/v1/drift", params={"stream": "s"}).json() == []
    assert client.get("/v1/models", params={"stream": "s"}).json() == []


def test_unknown_streams_and_versions_are_404_with_the_error_shape(
    client: TestClient, service: Service
) -> None:
    for path in ("/v1/windows", "/v1/drift", "/v1/models", "/v1/alerts", "/v1/models/1"):
        assert_error(
            client.get(path, params={"stream": "nope"}), 404, "stream_not_found", contains="nope"
        )
    predict = client.post("/v1/predict", json={"stream": "nope", "images": [png_base64(0)]})
    assert_error(predict, 404, "stream_not_found")
    write_version(service, "s", seed=1)
    assert_error(
        client.get("/v1/models/7", params={"stream": "s"}),
        404,
        "model_not_found",
        contains="no version 7",
    )
    no_champion = client.post("/v1/predict", json={"stream": "s", "images": [png_base64(0)]})
    assert_error(no_champion, 404, "model_not_found", contains="no champion")
    promote = client.post(
        "/v1/models/7/promote", json={"stream": "s", "reason": "typo"}, headers=AUTH
    )
    assert_error(promote, 404, "model_not_found", contains="no version 7")
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.post("/v1/alerts/99/ack", headers=AUTH), 404, "alert_not_found")


# --------------------------------------------------------------------------------------------
# Operator writes


def test_quarantine_lists_and_operator_decisions(client: TestClient, service: Service) -> None:
    windows = held_stream(service)
    first, second = windows[1][0][1], windows[1][1][1]
    held = client.get("/v1/quarantine", params={"stream": "s"})
    assert held.status_code == 200, held.text
    assert [(q["kind"], q["sample"], q["window"]) for q in held.json()] == [
        ("window", None, 2),
        ("sample", second, 1),
        ("sample", first, 1),
    ]
    label = windows[1][0][2]
    assert held.json()[2]["given"] == str(label) and held.json()[2]["score"] == 0.01
    assert held.json()[2]["believed"] == str((label + 1) % 10)

    body = {"stream": "s", "ids": [first], "by": "alice", "note": "the label was right"}
    for path in ("/v1/quarantine/release", "/v1/quarantine/confirm"):
        assert_error(client.post(path, json=body), 401, "unauthorized", contains="Bearer")
        wrong = client.post(path, json=body, headers={"Authorization": "Bearer wrong"})
        assert_error(wrong, 401, "unauthorized", contains="wrong operator token")
    assert len(client.get("/v1/quarantine", params={"stream": "s"}).json()) == 3

    released = client.post("/v1/quarantine/release", json=body, headers=AUTH)
    assert released.status_code == 200, released.text
    assert released.json() == {"released": 1, "samples": [first], "windows": []}
    confirmed = client.post(
        "/v1/quarantine/confirm", json={"stream": "s", "windows": [2], "by": "bob"}, headers=AUTH
    )
    assert confirmed.json() == {"confirmed": 1, "samples": [], "windows": [2]}
    everything = client.post(
        "/v1/quarantine/confirm", json={"stream": "s", "all": True, "by": "bob"}, headers=AUTH
    )
    assert everything.json() == {"confirmed": 1, "samples": [second], "windows": []}

    assert client.get("/v1/quarantine", params={"stream": "s"}).json() == []
    (back,) = client.get("/v1/quarantine", params={"stream": "s", "status": "released"}).json()
    assert (back["sample"], back["decided_by"], back["note"]) == (
        first, "alice", "the label was right"
    )  # fmt: skip
    assert back["decided_at"] is not None
    every = client.get("/v1/quarantine", params={"stream": "s", "status": "all"}).json()
    assert sorted(q["status"] for q in every) == ["confirmed", "confirmed", "released"]


def test_quarantine_requests_that_name_nothing_or_no_one_are_422(
    client: TestClient, service: Service
) -> None:
    held_stream(service)
    post = "/v1/quarantine/release"
    nothing = client.post(post, json={"stream": "s", "by": "alice"}, headers=AUTH)
    assert_error(nothing, 422, "invalid_request", contains="name the samples (ids) or windows")
    no_one = client.post(post, json={"stream": "s", "all": True}, headers=AUTH)
    assert_error(no_one, 422, "invalid_request", contains="body.by")
    blank = client.post(post, json={"stream": "s", "all": True, "by": " "}, headers=AUTH)
    assert_error(blank, 422, "invalid_request", contains="by: say who decides")
    bad_window = client.post(
        post, json={"stream": "s", "windows": [0], "by": "alice"}, headers=AUTH
    )
    assert_error(bad_window, 422, "invalid_request", contains="body.windows")
    unknown = client.post(post, json={"stream": "nope", "all": True, "by": "a"}, headers=AUTH)
    assert_error(unknown, 404, "stream_not_found")
    status = client.get("/v1/quarantine", params={"stream": "s", "status": "pending"})
    assert_error(status, 422, "invalid_request", contains="got 'pending'")
    assert len(client.get("/v1/quarantine", params={"stream": "s"}).json()) == 3


def test_writes_need_the_operator_token(client: TestClient, service: Service) -> None:
    write_version(service, "s", seed=1)
    writes = [
        ("/v1/alerts/1/ack", {"by": "mallory"}),
        ("/v1/models/1/promote", {"stream": "s", "reason": "because"}),
        ("/v1/models/rollback", {"stream": "s", "reason": "because"}),
    ]
    for path, body in writes:
        missing = client.post(path, json=body)
        assert_error(missing, 401, "unauthorized", contains="Bearer")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post(path, json=body, headers={"Authorization": "Bearer wrong"})
        assert_error(wrong, 401, "unauthorized", contains="wrong operator token")
        basic = client.post(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert_error(basic, 401, "unauthorized")
        latin = {"Authorization": "Bearer t\u00e9st".encode("latin-1")}
        unicode = client.post(path, json=body, headers=latin)
        assert_error(unicode, 401, "unauthorized")
    assert client.get("/v1/status").json()["streams"]["s"]["champion"] is None


def test_without_a_configured_token_writes_are_refused(tmp_path: Path) -> None:
    svc = make_service(tmp_path, operator_token=None)
    with TestClient(create_app(svc)) as client:
        response = client.post(
            "/v1/models/rollback", json={"stream": "s", "reason": "r"}, headers=AUTH
        )
        assert_error(response, 401, "unauthorized", contains="no operator token is configured")
    svc.close()


def test_ack_records_who(client: TestClient) -> None:
    bad = [{"image": "%%%", "label": 1, "group": "A"}]
    client.post("/v1/samples", json={"stream": "s", "samples": bad})
    client.post("/v1/samples", json={"stream": "t", "samples": bad})
    alerts = client.get("/v1/alerts", params={"open": True}).json()
    assert [a["subject"] for a in alerts] == ["t", "s"]
    first, second = alerts[1]["id"], alerts[0]["id"]

    acked = client.post(f"/v1/alerts/{first}/ack", json={"by": "alice"}, headers=AUTH)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] is True and acked.json()["acknowledged_by"] == "alice"
    default = client.post(f"/v1/alerts/{second}/ack", headers=AUTH).json()
    assert default["acknowledged_by"] == "operator"
    again = client.post(f"/v1/alerts/{first}/ack", json={"by": "bob"}, headers=AUTH).json()
    assert again["acknowledged_by"] == "alice"  # the first acknowledgement stands

    assert client.get("/v1/alerts", params={"open": "true"}).json() == []
    everything = client.get("/v1/alerts", params={"stream": "s"}).json()
    assert [(a["id"], a["acknowledged_by"]) for a in everything] == [(first, "alice")]


def test_promote_and_rollback(client: TestClient, service: Service) -> None:
    v1 = write_version(service, "s", seed=1)
    v2 = write_version(service, "s", seed=2, parent=v1)
    image = png_base64(3)

    def promote(version: int, **body: Any) -> Any:
        return client.post(f"/v1/models/{version}/promote", json=body, headers=AUTH)

    def rollback(**body: Any) -> Any:
        return client.post("/v1/models/rollback", json=body, headers=AUTH)

    nothing = rollback(stream="s", reason="no champion yet")
    assert_error(nothing, 404, "model_not_found", contains="no champion to roll back from")
    first = promote(v1, stream="s", reason="first")
    assert first.status_code == 200, first.text
    assert first.json() == {"stream": "s", "champion": 1, "previous": None}
    assert promote(v2, stream="s", reason="better", by="carol").json() == {
        "stream": "s",
        "champion": 2,
        "previous": 1,
    }
    models = client.get("/v1/models", params={"stream": "s"}).json()
    assert [(m["version"], m["status"], m["champion"]) for m in models] == [
        (1, "retired", False),
        (2, "champion", True),
    ]
    one = client.get("/v1/models/2", params={"stream": "s"}).json()
    assert one["parent"] == 1 and one["champion"] is True and one["strategy"] == "naive"
    predicted = client.post("/v1/predict", json={"stream": "s", "images": [image, image]})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["model_version"] == 2
    assert len(predicted.json()["predictions"]) == 2
    assert len(predicted.json()["predictions"][0]["scores"]) == 10

    back = rollback(stream="s", reason="v2 misbehaves", by="dave")
    assert back.status_code == 200, back.text
    assert back.json() == {"stream": "s", "champion": 1, "previous": 2}
    with service.store.session() as session:
        pointer = session.scalar(select(Champion))
        assert pointer.version == 1 and pointer.changed_by == "dave"
        assert pointer.reason == "rollback from v2: v2 misbehaves"
    again = client.post("/v1/predict", json={"stream": "s", "images": [image]})
    assert again.json()["model_version"] == 1

    further = rollback(stream="s", reason="again")
    assert_error(further, 404, "model_not_found", contains="no retired version older")
    forward = rollback(stream="s", reason="forward", to=2)
    assert_error(forward, 422, "invalid_request", contains="promote it instead")
    assert_error(rollback(stream="s", reason="r", to=9), 404, "model_not_found")
    assert_error(rollback(stream="nope", reason="r"), 404, "stream_not_found")
    assert client.get("/v1/status").json()["streams"]["s"]["champion"] == 1


def test_a_tampered_version_is_not_promoted(client: TestClient, service: Service) -> None:
    version = write_version(service, "s", seed=1)
    path = service.registry.folder("s", version) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    response = client.post(
        f"/v1/models/{version}/promote", json={"stream": "s", "reason": "r"}, headers=AUTH
    )
    assert_error(response, 404, "model_not_found", contains="does not match its digest")
    assert client.get("/v1/status").json()["streams"]["s"]["champion"] is None


# --------------------------------------------------------------------------------------------
# Bad input: never a 500


def test_oversized_bodies_are_413_before_parsing(tmp_path: Path) -> None:
    svc = make_service(tmp_path, max_request_bytes=4715)
    limit = api.body_limit(svc.settings)
    assert limit == 4715
    payload = json.dumps({"stream": "s", "samples": [{"image": "A" * limit}]}).encode()
    with TestClient(create_app(svc)) as client:
        declared = client.post(
            "/v1/samples", content=payload, headers={"Content-Type": "application/json"}
        )
        assert_error(declared, 413, "content_too_large", contains=str(limit))

        def chunks() -> Iterator[bytes]:  # no Content-Length: streamed (chunked)
            for start in range(0, len(payload), 1000):
                yield payload[start : start + 1000]

        streamed = client.post(
            "/v1/samples", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "content_too_large")
        bad_length = client.post("/v1/samples", content=b"{}", headers={"Content-Length": "x1"})
        assert_error(bad_length, 400, "bad_request")
        superscript = client.post("/v1/samples", content=b"{}", headers={"Content-Length": b"\xb2"})
        assert_error(superscript, 400, "bad_request")
        assert client.get("/v1/status").json() == {"streams": {}}
        small = {"stream": "s", "samples": good_samples(1)}
        assert client.post("/v1/samples", json=small).status_code == 200
    svc.close()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "where"),
    [
        ("post", "/v1/samples", {"content": b'{"stream": "s", "samples": [', "json_ct": 1}, "body"),
        ("post", "/v1/samples", {"content": b'{"samples": []}'}, "body"),
        ("post", "/v1/samples", {"content": b"\x03\xff~", "json_ct": 1}, "not UTF-8"),
        ("post", "/v1/samples", {"content": b"[" * 50_000, "json_ct": 1}, "nested too deeply"),
        ("post", "/v1/samples", {"json": {"stream": 5, "samples": []}}, "body.stream"),
        ("post", "/v1/samples", {"json": [1, 2]}, "body"),
        ("post", "/v1/predict", {"json": {"stream": "s", "images": []}}, "body.images"),
        ("post", "/v1/predict", {"json": {"stream": "s", "images": [1]}}, "body.images.0"),
        ("get", "/v1/models/abc", {}, "path.version"),
        ("get", "/v1/models/0", {}, "path.version"),
        ("get", "/v1/models/99999999999999999999", {}, "path.version"),
        ("get", "/v1/windows", {"params": {"stream": ""}}, "query.stream"),
        ("get", "/v1/alerts", {"params": {"open": "maybe"}}, "query.open"),
        ("post", "/v1/alerts/0/ack", {"auth": 1}, "path.id"),
        ("post", "/v1/alerts/1/ack", {"auth": 1, "json": {"by": ""}}, "body.by"),
        ("post", "/v1/models/1/promote", {"auth": 1, "json": {"stream": "s"}}, "body.reason"),
        (
            "post",
            "/v1/models/rollback",
            {"auth": 1, "json": {"stream": "s", "reason": "r", "to": "two"}},
            "body.to",
        ),
    ],
)
def test_malformed_requests_are_422_with_a_clear_detail(
    client: TestClient, method: str, path: str, kwargs: dict, where: str
) -> None:
    headers = dict(AUTH) if kwargs.pop("auth", None) else {}
    if kwargs.pop("json_ct", None):
        headers["Content-Type"] = "application/json"
    response = client.request(method, path, headers=headers, **kwargs)
    body = assert_error(response, 422, "invalid_request", contains=where)
    assert body["errors"] and all({"loc", "msg", "type"} <= set(e) for e in body["errors"])


def test_store_outages_are_503_not_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(service: Service) -> dict:
        raise StoreUnavailable("cannot reach the database: connection refused")

    monkeypatch.setattr(api, "status", down)
    response = client.get("/v1/status")
    assert_error(response, 503, "store_unavailable", contains="connection refused")
    assert response.headers["retry-after"]


# --------------------------------------------------------------------------------------------
# Metrics, OpenAPI, app factory, serve


def test_metrics_are_computed_from_the_store(client: TestClient, service: Service) -> None:
    client.post("/v1/samples", json={"stream": "m", "samples": good_samples(10)})
    client.post("/v1/samples", json={"stream": "m", "samples": [{"image": "%", "label": 1}]})
    client.post("/v1/samples", json={"stream": "m", "samples": 5})
    version = write_version(service, "m", seed=1)
    client.post(f"/v1/models/{version}/promote", json={"stream": "m", "reason": "r"}, headers=AUTH)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    for line in (
        "# TYPE learnstream_samples_accepted_total counter",
        'learnstream_samples_accepted_total{stream="m"} 10.0',
        "# TYPE learnstream_samples_rejected_total counter",
        'learnstream_samples_rejected_total{reason="group",stream="m"} 1.0',
        'learnstream_samples_rejected_total{reason="call",stream="m"} 1.0',
        "# TYPE learnstream_windows gauge",
        'learnstream_windows{state="closed",stream="m"} 1.0',
        'learnstream_windows{state="open",stream="m"} 1.0',
        'learnstream_windows{state="processed",stream="m"} 0.0',
        "# TYPE learnstream_champion_version gauge",
        'learnstream_champion_version{stream="m"} 1.0',
        "# TYPE learnstream_alerts_open gauge",
        'learnstream_alerts_open{kind="ingest.rejected"} 1.0',
        'learnstream_alerts_open{kind="drift.covariate"} 0.0',
        "learnstream_store_up 1.0",
    ):
        assert line in lines, line


def test_metrics_survive_a_store_outage(
    client: TestClient, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> Any:
        raise StoreUnavailable("cannot reach the database")

    monkeypatch.setattr(service.store, "session", down)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "learnstream_store_up 0.0" in response.text.splitlines()


def test_openapi_lists_every_endpoint_with_typed_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    expected = {
        "/v1/samples": {"post", "delete"},
        "/v1/predict": {"post"},
        "/v1/status": {"get"},
        "/v1/windows": {"get"},
        "/v1/drift": {"get"},
        "/v1/alerts": {"get"},
        "/v1/alerts/{id}/ack": {"post"},
        "/v1/models": {"get"},
        "/v1/models/{version}": {"get"},
        "/v1/models/{version}/promote": {"post"},
        "/v1/models/{version}/artifact": {"get"},
        "/v1/models/rollback": {"post"},
        "/v1/quarantine": {"get"},
        "/v1/quarantine/release": {"post"},
        "/v1/quarantine/confirm": {"post"},
        "/v1/streams": {"get", "post"},
        "/v1/streams/{name}": {"get", "patch"},
        "/metrics": {"get"},
        "/dashboard": {"get"},
        "/dashboard/{stream}": {"get"},
        "/healthz": {"get"},
    }
    assert {path: set(ops) for path, ops in spec["paths"].items()} == expected
    schemas = spec["components"]["schemas"]
    for name in (
        "SamplesRequest",
        "IngestResponse",
        "PredictRequest",
        "PromoteRequest",
        "StreamCreate",
        "StreamPatch",
    ):
        assert name in schemas
    samples = schemas["SamplesRequest"]["properties"]["samples"]
    assert samples["items"]["required"] == ["image", "label", "group"]
    for path, method in (
        ("/v1/alerts/{id}/ack", "post"),
        ("/v1/models/{version}/promote", "post"),
        ("/v1/models/rollback", "post"),
        ("/v1/samples", "delete"),
        ("/v1/quarantine/release", "post"),
        ("/v1/quarantine/confirm", "post"),
    ):
        assert spec["paths"][path][method]["security"] == [{"OperatorToken": []}]
    assert "security" not in spec["paths"]["/v1/samples"]["post"]
    ok = spec["paths"]["/v1/status"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StatusResponse"
    }


def test_without_a_service_the_app_uses_this_process_service(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    set_service(svc)
    try:
        with TestClient(create_app()) as client:
            client.post("/v1/samples", json={"stream": "lazy", "samples": good_samples(2)})
            assert client.get("/v1/status").json()["streams"]["lazy"]["samples"] == 2
    finally:
        set_service(None)


def test_serve_refuses_a_public_address_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    open_settings = Settings(home=tmp_path / "home")
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.org", ""):
        with pytest.raises(InsecureBind, match="LEARNSTREAM_OPERATOR_TOKEN"):
            api.serve(open_settings, host, 8000)
    assert runs == []
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        api.serve(open_settings, host, 8123)
    api.serve(Settings(home=tmp_path / "home", operator_token=TOKEN), "0.0.0.0", 8124)
    assert [(r["host"], r["port"]) for r in runs] == [
        ("127.0.0.1", 8123),
        ("localhost", 8123),
        ("::1", 8123),
        ("127.0.0.2", 8123),
        ("0.0.0.0", 8124),
    ]


# --------------------------------------------------------------------------------------------
# One shape everywhere


def test_queries_and_bodies_without_a_stream_use_the_default_stream_setting(
    tmp_path: Path,
) -> None:
    service = make_service(tmp_path, window_size=8, default_stream="team")
    with TestClient(create_app(service)) as client:
        ingested = client.post("/v1/samples", json={"samples": good_samples(9)})
        assert ingested.status_code == 200, ingested.text
        assert list(client.get("/v1/status").json()["streams"]) == ["team"]
        windows = client.get("/v1/windows").json()
        assert [(w["seq"], w["state"]) for w in windows] == [(1, "closed"), (2, "open")]
        assert client.get("/v1/drift").json() == []
        assert client.get("/v1/models").json() == []
        version = write_version(service, "team", seed=1)
        assert client.get(f"/v1/models/{version}").json()["version"] == version
        promoted = client.post(f"/v1/models/{version}/promote", json={"reason": "r"}, headers=AUTH)
        assert promoted.json() == {"stream": "team", "champion": version, "previous": None}
        predicted = client.post("/v1/predict", json={"images": [png_base64(0)]})
        assert predicted.status_code == 200, predicted.text
        rollback = client.post("/v1/models/rollback", json={"reason": "r"}, headers=AUTH)
        assert_error(rollback, 404, "model_not_found", contains="'team'")
    service.close()


def test_models_list_windows_by_their_numbers_not_their_ids(
    client: TestClient, service: Service
) -> None:
    from service.store.schema import Stream, Window

    client.post("/v1/samples", json={"stream": "first", "samples": good_samples(8)})
    client.post("/v1/samples", json={"stream": "s", "samples": good_samples(16, prefix="s")})
    with service.store.session() as session:
        ids = list(
            session.scalars(
                select(Window.id).join(Stream).where(Stream.name == "s").order_by(Window.seq)
            )
        )
    assert ids[:2] != [1, 2]  # stream first's windows came first
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    model = build_model(seed=0, **ARCH)
    service.registry.create_version(
        stream, model, state, parent=None, strategy="naive", params={}, windows=ids[:2], arch=ARCH
    )
    (listed,) = client.get("/v1/models", params={"stream": "s"}).json()
    assert listed["windows"] == [1, 2]
    assert client.get("/v1/models/1", params={"stream": "s"}).json()["windows"] == [1, 2]


def test_predict_names_the_classes_beside_the_scores(tmp_path: Path) -> None:
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    service = make_service(tmp_path, default_classes=names)
    version = write_version(service, "s", seed=1)
    with TestClient(create_app(service)) as client:
        body = {"stream": "s", "reason": "r"}
        client.post(f"/v1/models/{version}/promote", json=body, headers=AUTH)
        answer = client.post("/v1/predict", json={"stream": "s", "images": [png_base64(0)]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["classes"] == names and body["model_version"] == version
    (prediction,) = body["predictions"]
    assert set(prediction) == {"label", "scores"}
    assert prediction["label"] in names and len(prediction["scores"]) == len(names)
    service.close()


def test_predict_takes_optional_ids_and_groups_and_names_a_bad_one(tmp_path: Path) -> None:
    from service.store.schema import Traffic

    service = make_service(tmp_path)
    version = write_version(service, "s", seed=1)
    images = [png_base64(0), png_base64(1)]
    with TestClient(create_app(service)) as client:
        client.post(
            f"/v1/models/{version}/promote", json={"stream": "s", "reason": "r"}, headers=AUTH
        )
        old = client.post("/v1/predict", json={"stream": "s", "images": images})
        new = client.post(
            "/v1/predict",
            json={"stream": "s", "images": images, "ids": ["u-1", "u-2"], "groups": ["A", "B"]},
        )
        short = client.post("/v1/predict", json={"stream": "s", "images": images, "ids": ["u"]})
        typed = client.post("/v1/predict", json={"stream": "s", "images": images, "groups": [1, 2]})
    assert old.status_code == new.status_code == 200, (old.text, new.text)
    assert old.json() == new.json()
    assert short.status_code == 422
    assert short.json()["detail"] == "ids: 1 given for 2 images (one per image)"
    assert typed.status_code == 422 and "body.groups.0" in typed.text
    with service.store.session() as session:
        kept = session.execute(select(Traffic.traffic_id, Traffic.group).order_by(Traffic.id))
        assert [tuple(r) for r in kept][-2:] == [("u-1", "A"), ("u-2", "B")]
    service.close()
