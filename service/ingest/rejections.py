"""Rejections: what ingest refused, stored one row each and folded into one alert per burst.

A rejection's reason reads ``<field>: <problem>`` with, at times, `` (<detail>)`` after it
(``image: cannot decode (truncated file)``). The field is one of :data:`REJECTION_REASONS`,
so it serves as a bounded label (the metrics); the problem without its detail is what a
burst's alert counts. A whole call that cannot be read is stored with index ``None``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from service.alerts import records as alerts
from service.store.engine import Store
from service.store.schema import Rejection, valid_stream_name

REJECTION_BURST = timedelta(minutes=10)
REJECTION_REASONS = ("image", "label", "group", "id", "meta", "sample", "call", "other")
UNREADABLE_SUBJECT = "(unreadable call)"  # the alert subject of calls naming no usable stream


def reason_field(reason: str, whole_call: bool) -> str:
    """The bounded label of a rejection: the field its reason starts with, ``call`` for a
    whole call, else ``other``. A prefix of the reason is enough (the metrics group by one).

    >>> reason_field("label: 12 is outside the stream's 10 classes", False)
    'label'
    >>> reason_field("samples: must be a list, got int", True)
    'call'
    """
    if whole_call:
        return "call"
    field = reason.split(":", 1)[0]
    return field if field in REJECTION_REASONS else "other"


def reason_summary(reason: str) -> str:
    """A rejection's reason without its parenthesised detail: the key its alert counts.

    >>> reason_summary("image: cannot decode (truncated file)")
    'image: cannot decode'
    """
    return reason.split(" (")[0]


def record_rejections(
    store: Store, stream_name: str | None, stream_id: int | None, rejected: list[dict[str, Any]]
) -> None:
    """Store each rejection and fold them into the stream's current ``ingest.rejected`` alert."""
    if not rejected:
        return
    with store.session() as session:
        session.add_all(
            Rejection(stream_name=stream_name, index=r.get("index"), reason=r["reason"])
            for r in rejected
        )
        counts: dict[str, int] = {}
        for r in rejected:
            key = reason_summary(r["reason"])
            counts[key] = counts.get(key, 0) + 1
        alerts.raise_or_extend_burst(
            session,
            stream_id=stream_id,
            kind="ingest.rejected",
            subject=stream_name or UNREADABLE_SUBJECT,
            counts=counts,
            burst=REJECTION_BURST,
        )


def record_unreadable_call(store: Store, stream: Any, reason: str) -> None:
    """Record an ingest call that could not be read at all: the one path of the API (its
    validation errors, bodies that are not JSON) and of ``learnstream.ingest``. ``stream`` is
    kept only when it can name a stream."""
    name = stream if valid_stream_name(stream) else None
    record_rejections(store, name, None, [{"index": None, "reason": reason}])
