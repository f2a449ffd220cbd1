"""Stages on a stream's first windows: the reference, the gate's holdout, version 1's manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import digit_samples

from drift.features import penultimate_features
from learners.models import to_float
from service.config import Settings
from service.context import Service
from service.ingest.samples import ingest
from service.pipeline.gate import GateSettings
from service.pipeline.holdout import gate_holdout
from service.pipeline.processor import process_pending
from service.pipeline.reference import load_reference
from service.store.schema import Window


@pytest.fixture
def three_windows(sqlite_service: Service) -> Service:
    """Three processed windows of 64 digits: version 1 from the first, the others scored by it."""
    samples = digit_samples(3 * 64, seed=5)
    for start in range(0, len(samples), 64):
        ingest(sqlite_service.store, sqlite_service.settings, "demo", samples[start : start + 64])
        process_pending(sqlite_service, "demo")
    return sqlite_service


def test_version_1_records_the_epochs_lr_and_batch_size_it_trained_with(
    three_windows: Service,
) -> None:
    s = three_windows.settings
    folder = three_windows.registry.folder("demo", 1)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["params"] == {
        **s.strategy_params,
        "epochs": s.bootstrap_epochs,
        "lr": s.learning_rate,
        "batch_size": s.train_batch_size,
    }
    assert s.bootstrap_epochs != s.train_epochs


def test_the_reference_is_bounded_and_embedded_as_by_the_champion_alone(
    three_windows: Service,
) -> None:
    service = three_windows
    with service.store.session() as session:
        stream = service.store.stream(session, "demo")
    champion = service.version("demo", service.registry.champion(stream.id) or 0)
    ref = load_reference(
        service.store, stream, champion, seq=10**6, eras={}, limit=25, features=True
    )
    assert len(ref.holdout) == 25
    assert set(ref.holdout.splits) == {"holdout"}
    assert ref.features is not None
    alone = penultimate_features(champion.model, to_float(ref.holdout.x))
    assert np.array_equal(ref.features, alone)
    assert sum(len(h) for h in ref.error_history.values()) >= len(ref.holdout)
    assert len(ref.labels) >= len(ref.holdout)


def test_the_gate_holdout_carries_window_numbers(three_windows: Service) -> None:
    service = three_windows
    with service.store.session() as session:
        stream = service.store.stream(session, "demo")
        seq = {w.id: w.seq for w in session.query(Window).filter(Window.stream_id == stream.id)}
    holdout = gate_holdout(service.store, stream, service.settings)
    assert len(holdout.batch) > 0
    assert holdout.window_numbers.tolist() == [seq[int(w)] for w in holdout.batch.windows]


def test_gate_settings_default_to_the_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATE_TOLERANCE", "MIN_GROUP_SIZE", "MAX_GAP_INCREASE", "GATE_CONFIDENCE"):
        monkeypatch.delenv(f"LEARNSTREAM_{name}", raising=False)
    assert GateSettings() == GateSettings.from_settings(Settings())


def test_an_online_detector_is_not_kept_for_a_stream_recreated_under_its_name(tmp_path) -> None:
    from datetime import UTC, datetime

    from service.pipeline.drift import OnlineDetectors, online_detector_key
    from service.store.schema import Stream

    settings = Settings(home=tmp_path, drift_mode="online")
    first = Stream(id=1, name="s", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    # SQLite gives a deleted stream's id to the next stream created.
    again = Stream(id=1, name="s", created_at=datetime(2026, 1, 2, tzinfo=UTC))
    detectors, built = OnlineDetectors(), []

    def build() -> object:
        built.append(object())
        return built[-1]

    one = detectors.get("s", online_detector_key(settings, first, 1), 4, build)
    assert detectors.get("s", online_detector_key(settings, first, 1), 5, build) is one
    # Window 6 went to another learner: this one's run does not continue at window 7.
    two = detectors.get("s", online_detector_key(settings, first, 1), 7, build)
    assert two is not one
    assert detectors.get("s", online_detector_key(settings, again, 1), 8, build) is not two
    assert len(built) == 3
