"""Removing a stream: every row that names it, and its model versions on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import delete, select

from service.store.engine import Store
from service.store.schema import (
    Alert,
    Champion,
    DriftReport,
    ModelVersion,
    Quarantine,
    Rejection,
    Sample,
    Stream,
    Window,
)


def delete_stream(store: Store, model_dir: Path, name: str) -> bool:
    """Remove the stream ``name`` with its samples, windows, versions, reports and alerts, and
    its folder under ``model_dir`` (the registry's); ``False`` when there is no such stream."""
    with store.session() as session:
        stream = session.scalar(select(Stream).where(Stream.name == name))
        if stream is None:
            return False
        for table in (DriftReport, Alert, Champion, ModelVersion, Quarantine, Sample, Window):
            session.execute(delete(table).where(table.stream_id == stream.id))
        session.execute(delete(Rejection).where(Rejection.stream_name == name))
        session.delete(stream)
    store.streams.pop(name, None)
    # A stored name passed valid_stream_name, so it names a folder right under model_dir.
    shutil.rmtree(model_dir / name, ignore_errors=True)
    return True
