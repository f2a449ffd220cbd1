"""Removing a stream (every row that names it, and its model versions on disk) and removing
samples (every row that names them)."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.store.engine import Store
from service.store.schema import (
    Alert,
    Champion,
    Deletion,
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
        for table in (
            DriftReport,
            Alert,
            Champion,
            Deletion,
            ModelVersion,
            Quarantine,
            Sample,
            Window,
        ):
            session.execute(delete(table).where(table.stream_id == stream.id))
        session.execute(delete(Rejection).where(Rejection.stream_name == name))
        session.delete(stream)
    store.streams.pop(name, None)
    # A stored name passed valid_stream_name, so it names a folder right under model_dir.
    shutil.rmtree(model_dir / name, ignore_errors=True)
    return True


def delete_sample_rows(session: Session, stream_id: int, row_ids: Collection[int]) -> int:
    """Delete the samples with database ids ``row_ids`` of stream ``stream_id``, and every row
    that refers to them, in the caller's transaction; returns how many samples went.

    The one place that removes samples: a table that comes to reference samples adds its
    delete here. Windows stay (their ``size`` remains the count they received)."""
    ids = sorted({int(i) for i in row_ids})
    deleted = 0
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        session.execute(delete(Quarantine).where(Quarantine.sample_row.in_(chunk)))
        result = session.execute(
            delete(Sample).where(Sample.stream_id == stream_id, Sample.id.in_(chunk))
        )
        deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return deleted
