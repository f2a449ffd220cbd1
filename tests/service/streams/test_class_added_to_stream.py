"""A class added to a configured stream: the candidate's head grows, the gate reports it apart."""

from __future__ import annotations

import torch
from helpers import digit_samples

from service.context import Service
from service.ingest.samples import ingest
from service.pipeline.processor import process_pending
from service.store.schema import ModelVersion
from service.streams.catalog import StreamSpec, create_stream, update_stream

NINE = [str(i) for i in range(9)]


def _send(service: Service, samples: list[dict]) -> None:
    ingest(service.store, service.settings, "grow", samples)
    process_pending(service, "grow")


def test_an_added_class_grows_the_head_and_is_reported_apart(sqlite_service: Service) -> None:
    service = sqlite_service
    spec = StreamSpec(
        classes=NINE,
        settings={
            "strategy": "ewc",
            "update_policy": "every_window",
            "train_epochs": 3,
            "bootstrap_samples": 150,
            # At 0.05 a version 1 from ~190 samples diverged for one stream name in four
            # (accuracy 0.13); at 0.02 four names gave 0.86-0.92 (the gate needs 0.5).
            "learning_rate": 0.02,
        },
    )
    create_stream(service.store, service.settings, "grow", spec)
    before = [s for s in digit_samples(400, seed=1) if s["label"] != 9][:256]
    _send(service, before)
    with service.store.session() as session:
        champion = session.query(ModelVersion).filter_by(status="champion").one()
    assert service.registry.load("grow", champion.version).model.head.out_features == 9

    update_stream(service.store, service.settings, "grow", {}, add_classes=["9"])
    # The new class's samples first: the next window holds ~19 nines, so its holdout (30 %
    # by content digest) holds some for the gate to report apart.
    after = sorted(digit_samples(64 * 3, seed=2, prefix="after"), key=lambda s: s["label"] != 9)
    _send(service, after)
    with service.store.session() as session:
        rows = session.query(ModelVersion).order_by(ModelVersion.version).all()
    assert [r.strategy for r in rows] == ["ewc"] * len(rows)  # the stream's own strategy
    after_add = [r for r in rows if r.version > champion.version]
    grown = service.registry.load("grow", after_add[0].version)
    assert grown.manifest["arch"]["n_classes"] == 10
    assert grown.model.head.out_features == 10
    # The first candidate whose gate holdout held a 9.
    report = next(
        r.gate_report for r in after_add if "9" in ((r.gate_report or {}).get("new_classes") or {})
    )
    new = report["new_classes"]["9"]
    print(f"new class 9 on the gate's holdout: {new}; gate reasons {report['reasons']}")
    assert new["n"] > 0 and 0.0 <= new["candidate_accuracy"] <= 1.0
    # The champion's nine classes are compared on their own samples only.
    assert report["n"] == sum(c["n"] for c in report["groups"])
    nines = [s for s in after if s["label"] == 9]
    assert report["n"] + new["n"] > report["n"] and len(nines) > 0
    last = service.registry.load("grow", rows[-1].version)
    with torch.no_grad():
        assert last.model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
