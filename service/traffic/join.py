"""The join: a labelled sample that names an earlier prediction records its label there.

Ingest calls :func:`join_labels` in the transaction that stores the samples, so a sample
and its join commit together. A sample names a traffic row of its stream by its id (the
caller predicted with ``ids``), or, for an image predicted without an id, by its picture
(the row's id is then its content digest). Only a row not yet labelled is joined: the
first label that arrives for a prediction is the one its accuracy counts. A label stored
before its image was predicted is not joined (there was nothing served to judge).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.store.bulk import any_of
from service.store.schema import Traffic, utcnow


@dataclass(frozen=True)
class Labelled:
    """A labelled sample as ingest stored it."""

    sample_id: str
    content_digest: str
    label: int
    group: str


def join_labels(session: Session, stream_id: int, samples: Iterable[Labelled]) -> int:
    """Record each sample's label on the unlabelled traffic row it names (by id first, then
    by picture); a row sent without a group takes the sample's. The rows joined."""
    by_name: dict[str, Labelled] = {}
    for sample in samples:
        by_name.setdefault(sample.sample_id, sample)
    for sample in list(by_name.values()):
        by_name.setdefault(sample.content_digest, sample)
    if not by_name:
        return 0
    rows = session.execute(
        select(Traffic.id, Traffic.traffic_id, Traffic.group).where(
            Traffic.stream_id == stream_id,
            any_of(session, Traffic.traffic_id, list(by_name)),
            Traffic.label.is_(None),
        )
    ).all()
    if not rows:
        return 0
    now = utcnow()
    session.execute(
        update(Traffic),
        [
            {
                "id": row.id,
                "label": by_name[row.traffic_id].label,
                "labelled_at": now,
                "group": row.group if row.group is not None else by_name[row.traffic_id].group,
            }
            for row in rows
        ],
    )
    return len(rows)
