"""A late label joins its prediction in ingest's transaction; served accuracy follows it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from helpers import digit_samples, seeded_champion
from sqlalchemy import select

from service.context import Service
from service.ingest.samples import ingest
from service.models.serving import predict_images
from service.queries.listings import status
from service.store.schema import Stream, Traffic
from service.traffic.served import served_accuracy


def _rows(service: Service) -> dict[str, Traffic]:
    with service.store.session() as session:
        return {r.traffic_id: r for r in session.scalars(select(Traffic))}


def _age(service: Service, seconds: dict[str, float]) -> None:
    """Move the predictions of these ids back in time (their label delay grows by as much)."""
    with service.store.session() as session:
        for traffic_id, back in seconds.items():
            row = session.scalar(select(Traffic).where(Traffic.traffic_id == traffic_id))
            assert row is not None
            row.received_at = row.received_at - timedelta(seconds=back)


def test_a_late_label_joins_its_prediction_and_served_accuracy_counts_it(service) -> None:
    samples = digit_samples(12, seed=3, prefix="p")  # groups A and B in turn
    seeded_champion(service, seed=1)
    first = predict_images(
        service,
        "s",
        [s["image"] for s in samples[:6]],
        ids=[s["id"] for s in samples[:6]],
        groups=[s["group"] for s in samples[:6]],
    )
    seeded_champion(service, seed=2)  # version 2 serves the rest
    rest = predict_images(
        service,
        "s",
        [s["image"] for s in samples[6:]],
        ids=[s["id"] for s in samples[6:]],
        groups=[s["group"] for s in samples[6:]],
    )
    unnamed = digit_samples(1, seed=4, prefix="u")[0]
    predict_images(service, "s", [unnamed["image"]])  # no id, no group: named by its picture
    served = {
        s["id"]: (answer["model_version"], prediction["label"], s["group"])
        for answer, part in ((first, samples[:6]), (rest, samples[6:]))
        for s, prediction in zip(part, answer["predictions"], strict=True)
    }
    assert {v for v, _, _ in served.values()} == {1, 2}
    delays = {s["id"]: 10.0 * (k + 1) for k, s in enumerate(samples)}
    _age(service, delays)
    assert all(r.label is None for r in _rows(service).values())

    # Labels arrive for 9 of the 12 named predictions, for the unnamed one (without an id,
    # by its picture) and for an image nobody predicted.
    labelled = samples[:9]
    unnamed_label = {**unnamed, "id": None, "group": "C"}
    del unnamed_label["id"]
    other = digit_samples(1, seed=5, prefix="never")
    result = ingest(service.store, service.settings, "s", [*labelled, unnamed_label, *other])
    assert len(result.accepted) == 11 and result.joined == 10
    rows = _rows(service)
    for s in labelled:
        assert rows[s["id"]].label == s["label"] and rows[s["id"]].labelled_at is not None
    for s in samples[9:]:
        assert rows[s["id"]].label is None
    (by_picture,) = [r for r in rows.values() if r.traffic_id == r.content_digest]
    assert by_picture.label == unnamed["label"] and by_picture.group == "C"

    # The same labels again are duplicates: nothing is joined twice.
    assert ingest(service.store, service.settings, "s", labelled).joined == 0

    # Independently: from what predict answered and the labels sent.
    right = {s["id"]: served[s["id"]][1] == str(s["label"]) for s in labelled}
    with service.store.session() as session:
        stream_id = session.scalar(select(Stream.id).where(Stream.name == "s"))
        assert stream_id is not None
        report = served_accuracy(session, stream_id).to_dict()
    unnamed_right = by_picture.predicted == by_picture.label
    correct = sum(right.values()) + unnamed_right
    assert report["traffic"] == 13 and report["labelled"] == 10
    assert report["accuracy"] == correct / 10
    for group in ("A", "B"):
        ids = [s["id"] for s in labelled if s["group"] == group]
        assert report["by_group"][group] == {
            "n": len(ids),
            "accuracy": sum(right[i] for i in ids) / len(ids),
        }
    assert report["by_group"]["C"] == {"n": 1, "accuracy": float(unnamed_right)}
    for version in (1, 2):
        ids = [s["id"] for s in labelled if served[s["id"]][0] == version]
        tally = report["by_version"][str(version)]
        extra = version == 2  # the unnamed image was served by version 2
        assert tally["n"] == len(ids) + extra
        assert tally["accuracy"] == (sum(right[i] for i in ids) + extra * unnamed_right) / (
            len(ids) + extra
        )
    seconds = [
        (r.labelled_at - r.received_at).total_seconds() for r in rows.values() if r.labelled_at
    ]
    delay = report["label_delay_s"]
    assert delay["count"] == 10
    assert delay["p50"] == round(float(np.percentile(seconds, 50)), 3)
    assert delay["p90"] == round(float(np.percentile(seconds, 90)), 3)
    assert delay["max"] == round(max(seconds), 3)
    assert 90.0 <= delay["max"] < 100.0  # the oldest labelled prediction: 90 s back
    assert status(service)["streams"]["s"]["served"] == report
