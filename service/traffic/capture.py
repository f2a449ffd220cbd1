"""Capture: a share of each prediction call's images kept as the stream's traffic.

Each image is named by the caller's id, else by its content digest (sha256 of the stream's
name and its pixels at the stream's shape, as a sample's is), and kept when a hash of that
name falls under ``traffic_capture``: the same id is always kept or always not, whatever
the call, so tests and reruns choose the same images. A kept image stores its pixels (the
ones the champion saw, decoded once by predict), the class served, its probability, the
version that served it and the caller's group, in the stream's open traffic window.

An id is kept once: the first prediction served under it (a redelivered call, or the same
picture sent again without an id, is not counted twice). Capture runs after the answer is
computed, in one transaction with one INSERT of the call's rows, and never fails a
prediction: :func:`capture_quietly` logs what went wrong and answers that nothing was kept.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.config import Settings
from service.ingest.samples import content_digest
from service.store.bulk import any_of
from service.store.engine import Store
from service.store.schema import Stream, Traffic, utcnow
from service.traffic.windows import aged, close_traffic_window, current, new_traffic_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """What one prediction call served: per image its pixels at the stream's shape, the class
    index and its probability; the caller's ids and groups when given."""

    stream: Stream
    version: int
    pixels: Sequence[bytes]
    predicted: Sequence[int]
    probability: Sequence[float]
    ids: Sequence[str] | None = None
    groups: Sequence[str] | None = None


def kept(traffic_id: str, share: float) -> bool:
    """Whether the image named ``traffic_id`` is kept under ``share`` (by a hash of the name).

    >>> kept("a", 1.0), kept("a", 0.0)
    (True, False)
    >>> [kept(f"img-{i}", 0.5) for i in range(6)]
    [True, False, True, False, False, False]
    """
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    digest = hashlib.sha256(b"traffic\0" + traffic_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _rows(served: Served, share: float) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    now = utcnow()
    for i, pixels in enumerate(served.pixels):
        digest = content_digest(served.stream.name, pixels)
        traffic_id = served.ids[i] if served.ids is not None else digest
        if traffic_id in rows or not kept(traffic_id, share):
            continue
        rows[traffic_id] = {
            "stream_id": served.stream.id,
            "traffic_id": traffic_id,
            "group": served.groups[i] if served.groups is not None else None,
            "received_at": now,
            "content_digest": digest,
            "pixels": pixels,
            "predicted": int(served.predicted[i]),
            "probability": float(served.probability[i]),
            "served_version": served.version,
        }
    return list(rows.values())


@dataclass(frozen=True)
class Captured:
    """What a capture stored: rows kept, and the traffic windows (numbers) it closed."""

    kept: int = 0
    closed: tuple[int, ...] = ()


def _insert(session: Session, stream_id: int, rows: list[dict[str, Any]], s: Settings) -> Captured:
    window = current(session, stream_id)  # locked first: captures of a stream take turns
    known = set(
        session.scalars(
            select(Traffic.traffic_id).where(
                Traffic.stream_id == stream_id,
                any_of(session, Traffic.traffic_id, [r["traffic_id"] for r in rows]),
            )
        )
    )
    new = [r for r in rows if r["traffic_id"] not in known]
    if not new:
        return Captured()
    closed = []
    if window is not None and aged(window.opened_at, s):
        close_traffic_window(window)
        closed.append(window.seq)
        session.flush()
        window = None
    for row in new:
        window = window or new_traffic_window(session, stream_id)
        row["window_id"] = window.id
        window.size += 1
        if window.size >= s.traffic_window_size:
            close_traffic_window(window)
            closed.append(window.seq)
            session.flush()
            window = None
    session.execute(insert(Traffic), new)
    return Captured(len(new), tuple(closed))


def capture(store: Store, settings: Settings, served: Served) -> Captured:
    """Keep the share of ``served`` that ``settings.traffic_capture`` says (the stream's
    settings in force); the rows stored and the windows closed. A race with a concurrent
    capture of the same stream (both opening a window, or both storing one id) is tried once
    more."""
    if settings.traffic_capture <= 0.0:
        return Captured()
    rows = _rows(served, settings.traffic_capture)
    if not rows:
        return Captured()
    try:
        with store.session() as session:
            return _insert(session, served.stream.id, rows, settings)
    except IntegrityError:
        with store.session() as session:
            return _insert(session, served.stream.id, rows, settings)


def capture_quietly(store: Store, settings: Settings, served: Served) -> Captured:
    """:func:`capture`, where any error is logged and answers nothing kept: a prediction
    never fails because its traffic could not be kept."""
    try:
        return capture(store, settings, served)
    except Exception:
        log.exception("traffic: a prediction's images could not be kept")
        return Captured()
