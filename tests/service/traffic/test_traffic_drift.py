"""Traffic drift: served images tested against the champion's reference before labels come.

One stream is trained once (version 1 on two labelled windows of digits); traffic windows
of 128 served images follow. Unshifted traffic raises nothing; traffic whose group B is
rotated by 40 degrees opens a ``drift.traffic`` incident naming B and served images of B,
which the next unshifted window closes. Each test prints its margins (p-values against the
threshold), which are wide: the decisions do not depend on rounding.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import digit_samples, make_settings
from sqlalchemy import select

from service.api.app import create_app
from service.context import Service
from service.ingest.samples import ingest
from service.models.serving import predict_images
from service.pipeline.processor import process_pending
from service.queries.listings import status
from service.store.schema import Alert, TrafficWindow
from service.traffic.drift import check_pending_traffic

TRAFFIC = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """A stream served by a version trained on windows of 128 digits (groups A and B), with
    six processed windows whose held-out samples make the reference."""
    home = tmp_path_factory.mktemp("traffic_drift")
    settings = make_settings(
        home,
        window_size=128,
        traffic_window_size=TRAFFIC,
        bootstrap_samples=250,
        label_screen=False,
    )
    service = Service.from_settings(settings)
    classes = settings.default_classes
    samples = [{**s, "label": classes[s["label"]]} for s in digit_samples(768, seed=3)]
    assert not ingest(service.store, settings, "s", samples).rejected
    process_pending(service, "s")
    assert service.registry.champion(1) is not None
    return service


def _serve(service: Service, seed: int, rotate: str | None = None) -> list[int]:
    """Predict one traffic window's images (ids and groups given); the windows closed."""
    samples = digit_samples(TRAFFIC, seed=seed, prefix=f"t{seed}", rotate_group=rotate, rotation=40)
    closed: list[int] = []
    predict_images(
        service,
        "s",
        [s["image"] for s in samples],
        ids=[s["id"] for s in samples],
        groups=[s["group"] for s in samples],
        on_traffic_closed=lambda stream, numbers: closed.extend(numbers),
    )
    return closed


def _incidents(service: Service) -> list[Alert]:
    with service.store.session() as session:
        return list(session.scalars(select(Alert).where(Alert.kind == "drift.traffic")))


def _margin(summary: dict[str, Any]) -> str:
    parts = []
    for test in ("covariate", "prediction"):
        r = summary[test]
        p = min([r["p_value"], *r["per_group"].values()])
        parts.append(f"{test} p={p:.3g} vs {r['threshold']:.3g}")
    return ", ".join(parts)


def test_a_shift_in_traffic_opens_an_incident_and_unshifted_traffic_closes_it(
    trained: Service,
) -> None:
    service = trained
    verdicts = []
    for seed, rotate in [(11, None), (12, "B"), (13, "B"), (14, None)]:
        assert _serve(service, seed, rotate) != []
        (verdict,) = check_pending_traffic(service, "s")
        print(f"traffic window {verdict.window} rotate={rotate}: {_margin(verdict.to_dict())}")
        verdicts.append(verdict)
    quiet, shifted, still, back = verdicts
    assert quiet.tested and not quiet.drift
    assert shifted.drift and "B" in shifted.groups and "A" not in shifted.groups
    assert still.drift
    assert not back.drift
    (incident,) = _incidents(service)
    payload = incident.payload
    assert payload["incident"] == {"windows": [2, 3], "open": False, "closed_by_window": 4}
    assert payload["groups"] == ["B"]
    assert "traffic shift in group B from traffic window 2" in incident.message
    shown = payload["shifted_samples"]
    assert shown and all(i.startswith("t13-") and int(i.rsplit("-")[-1]) % 2 for i in shown)
    with service.store.session() as session:
        states = session.scalars(select(TrafficWindow.state).order_by(TrafficWindow.seq)).all()
    assert states == ["tested"] * 4
    # status and /metrics tell the same story
    reported = status(service)["streams"]["s"]["traffic_drift"]
    assert reported["verdicts"] == {"drift": 2, "no_drift": 2, "untested": 0, "waiting": 0}
    assert reported["incident"]["traffic_windows"] == [2, 3] and not reported["incident"]["open"]
    assert [w["window"] for w in reported["recent"]] == [4, 3, 2]  # the latest three
    with TestClient(create_app(service)) as client:
        scraped = client.get("/metrics").text
    assert 'learnstream_traffic_windows{stream="s",verdict="drift"} 2.0' in scraped
    assert 'learnstream_traffic_drift_open{stream="s"} 0.0' in scraped


def test_an_open_traffic_incident_starts_the_adaptation_when_its_labels_arrive(
    trained: Service,
) -> None:
    """With ``adapt_on_traffic_drift``, the labelled window that brings the labels of the
    drifted traffic names the incident as the adaptation's first reason."""
    service = trained
    assert _serve(service, 15, "B") != []
    (verdict,) = check_pending_traffic(service, "s")
    print(f"traffic window {verdict.window}: {_margin(verdict.to_dict())}")
    assert verdict.drift and verdict.groups == ["B"]
    acting = Service(
        service.settings.model_copy(update={"adapt_on_traffic_drift": True}), service.store
    )
    classes = acting.settings.default_classes
    labelled = digit_samples(TRAFFIC, seed=15, prefix="t15", rotate_group="B", rotation=40)
    samples = [{**s, "label": classes[s["label"]]} for s in labelled]
    assert not ingest(acting.store, acting.settings, "s", samples).rejected
    (outcome,) = process_pending(acting, "s")
    assert outcome.traffic is not None
    assert outcome.traffic["groups"] == ["B"] and outcome.traffic["labelled"]["B"] == 64
    assert outcome.adaptation is not None and outcome.updated
    reason = outcome.adaptation["reason"]
    assert reason.startswith(f"traffic drift in B since traffic window {verdict.window}"), reason


def test_the_background_writer_keeps_traffic_after_predict_answers_and_drops_when_full(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from helpers import seeded_champion

    import service.traffic.capture as capture_module
    from service.store.schema import Traffic
    from service.traffic.writer import flush_traffic, traffic_writer

    settings = make_settings(tmp_path, traffic_capture_mode="background", traffic_capture_queue=1)
    service = Service.from_settings(settings)
    seeded_champion(service)
    images = [s["image"] for s in digit_samples(4, seed=2)]
    predict_images(service, "s", images[:2], ids=["a", "b"])
    assert flush_traffic(service.store)
    with service.store.session() as session:
        assert sorted(session.scalars(select(Traffic.traffic_id))) == ["a", "b"]

    release, started = threading.Event(), threading.Event()
    real = capture_module.capture_quietly

    def slow(*args: Any) -> Any:
        started.set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(capture_module, "capture_quietly", slow)
    predict_images(service, "s", images[2:3], ids=["c"])  # taken by the writer, held there
    assert started.wait(10)
    predict_images(service, "s", images[3:4], ids=["d"])  # waits in the queue (capacity 1)
    answer = predict_images(service, "s", images[3:4], ids=["e"])  # full: not kept
    assert answer["predictions"]  # the prediction is answered all the same
    assert traffic_writer(service.store).dropped == 1  # one image
    release.set()
    assert flush_traffic(service.store)
    with service.store.session() as session:
        assert sorted(session.scalars(select(Traffic.traffic_id))) == ["a", "b", "c", "d"]
