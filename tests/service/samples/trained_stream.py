"""A small stream that trains: version 1 and updates from it, with replay buffers.

The test modules import the fixtures ``trained`` (SQLite and PostgreSQL) and
``trained_sqlite`` from here (a conftest of this folder would clash with tests/learners')."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import digit_samples, make_settings

from service.context import Service, set_service
from service.ingest.samples import ingest
from service.pipeline.processor import process_pending

STREAM = "del"
# Every window trains a candidate from the champion with a small replay buffer; few epochs
# keep it fast, and the gate's slices are reported, not decisive, at this size.
FAST = {
    "update_policy": "every_window",
    "strategy": "replay",
    "strategy_params": {"mem_size": 30},
    "train_epochs": 2,
    "bootstrap_epochs": 4,
    "min_bootstrap_accuracy": 0.0,
}


def send_window(service: Service, window: int, *, meta: dict | None = None) -> list[dict]:
    """One window of 64 digits (ids ``w{window}-...``), processed."""
    samples = digit_samples(64, seed=window, prefix=f"w{window}")
    for sample in samples:
        sample["meta"] = {"window": window, **(meta or {})}
    ingest(service.store, service.settings, STREAM, samples)
    process_pending(service, STREAM)
    return samples


def trained_service(
    tmp_path: Path, database_url: str | None, windows: int, **overrides: object
) -> Service:
    settings = make_settings(tmp_path, database_url, **{**FAST, **overrides})
    service = Service.from_settings(settings)
    for window in range(1, windows + 1):
        send_window(service, window)
    return service


@pytest.fixture(name="trained")
def trained_fixture(tmp_path: Path, database_url: str) -> Iterator[Service]:
    """Three windows: version 1 on window 1, then a candidate per window."""
    service = trained_service(tmp_path, database_url, 3)
    set_service(service)
    yield service
    set_service(None)


@pytest.fixture(name="trained_sqlite")
def trained_sqlite_fixture(tmp_path: Path) -> Iterator[Service]:
    """As ``trained``, on SQLite only."""
    service = trained_service(tmp_path, None, 3)
    set_service(service)
    yield service
    set_service(None)
