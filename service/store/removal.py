"""Removing a stream (every row that names it, and its model versions on disk) and removing
samples (every row that names them)."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.store.bulk import chunks
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
    Traffic,
    TrafficWindow,
    Window,
)


def delete_stream(store: Store, model_dir: Path, name: str) -> bool:
    """Remove the stream ``name`` with its samples, windows, traffic, versions, reports and
    alerts, and its folder under ``model_dir`` (the registry's); ``False`` when there is no
    such stream."""
    with store.session() as session:
        stream = session.scalar(select(Stream).where(Stream.name == name))
        if stream is None:
            return False
        in_files = set(
            session.scalars(
                select(Sample.content_digest).where(
                    Sample.stream_id == stream.id,
                    Sample.pixels.is_(None),
                    Sample.content_digest.is_not(None),
                )
            )
        )
        for table in (
            DriftReport,
            Alert,
            Champion,
            Deletion,
            ModelVersion,
            Quarantine,
            Sample,
            Window,
            Traffic,
            TrafficWindow,
        ):
            session.execute(delete(table).where(table.stream_id == stream.id))
        session.execute(delete(Rejection).where(Rejection.stream_name == name))
        session.delete(stream)
    store.streams.pop(name, None)
    store.images.discard({str(d) for d in in_files})  # digests name the stream: its own files
    # A stored name passed valid_stream_name, so it names a folder right under model_dir.
    shutil.rmtree(model_dir / name, ignore_errors=True)
    return True


@dataclass(frozen=True)
class RemovedSamples:
    """How many samples a deletion removed, and the image-store files they named: candidates
    to discard once the deletion committed (a rollback must find them still there), each
    checked again under the stream's lock, as another sample may name the same picture."""

    count: int
    orphaned_images: set[str] = field(default_factory=set)


def delete_sample_rows(
    session: Session, stream_id: int, row_ids: Collection[int]
) -> RemovedSamples:
    """Delete the samples with database ids ``row_ids`` of stream ``stream_id``, and every row
    that refers to them, in the caller's transaction.

    The one place that removes samples: a table that comes to reference samples adds its
    delete here. Windows stay (their ``size`` remains the count they received)."""
    ids = sorted({int(i) for i in row_ids})
    deleted, in_files = 0, set()
    for chunk in chunks(ids):
        in_files |= set(
            session.scalars(
                select(Sample.content_digest).where(
                    Sample.id.in_(chunk),
                    Sample.pixels.is_(None),
                    Sample.content_digest.is_not(None),
                )
            )
        )
        session.execute(delete(Quarantine).where(Quarantine.sample_row.in_(chunk)))
        result = session.execute(
            delete(Sample).where(Sample.stream_id == stream_id, Sample.id.in_(chunk))
        )
        deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return RemovedSamples(deleted, {str(d) for d in in_files})


def delete_traffic_rows(session: Session, stream_id: int, traffic_ids: Collection[str]) -> int:
    """Delete the traffic rows of stream ``stream_id`` named by ``traffic_ids`` (the ids
    predictions were sent with, or content digests), in the caller's transaction; how many."""
    names = sorted({str(i) for i in traffic_ids})
    deleted = 0
    for chunk in chunks(names):
        result = session.execute(
            delete(Traffic).where(Traffic.stream_id == stream_id, Traffic.traffic_id.in_(chunk))
        )
        deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return deleted
