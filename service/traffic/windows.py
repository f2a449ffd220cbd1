"""Traffic windows: a stream's kept predictions fill its open traffic window, which closes
when full (``traffic_window_size``) or too old (``traffic_window_max_age``: when the next
capture finds it so, or the sweep does).

They live apart from the labelled ``windows`` (which the learner claims, trains on and
gates with), so no labelled-window code has to tell the two apart. A partial unique index
holds at most one open traffic window per stream; on PostgreSQL a capture locks that row
(``FOR UPDATE``), so concurrent captures of one stream fill it in turn without ever taking
the stream's row lock, which ingest holds while it commits.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.engine import Store
from service.store.schema import Stream, TrafficWindow, as_utc, utcnow
from service.streams.configuration import StreamConfigInvalid, settings_for

log = logging.getLogger(__name__)


def close_traffic_window(window: TrafficWindow) -> None:
    window.state, window.closed_at = "closed", utcnow()


def aged(opened_at: datetime, settings: Settings) -> bool:
    """Whether a traffic window opened at ``opened_at`` is old enough to close by age."""
    return (utcnow() - as_utc(opened_at)).total_seconds() >= settings.traffic_window_max_age


def current(session: Session, stream_id: int) -> TrafficWindow | None:
    """The stream's open traffic window, locked for this transaction on PostgreSQL."""
    return session.scalar(
        select(TrafficWindow)
        .where(TrafficWindow.stream_id == stream_id, TrafficWindow.state == "open")
        .with_for_update()
    )


def new_traffic_window(session: Session, stream_id: int) -> TrafficWindow:
    last = session.scalar(
        select(func.max(TrafficWindow.seq)).where(TrafficWindow.stream_id == stream_id)
    )
    window = TrafficWindow(stream_id=stream_id, seq=(last or 0) + 1, state="open", size=0)
    session.add(window)
    session.flush()
    return window


def close_aged_traffic_windows(store: Store, settings: Settings) -> dict[str, list[int]]:
    """Close every open traffic window older than its stream's ``traffic_window_max_age``;
    the numbers (``seq``) of the windows closed, by stream name."""
    with store.session() as session:
        candidates = session.execute(
            select(Stream, TrafficWindow.opened_at)
            .join(TrafficWindow, TrafficWindow.stream_id == Stream.id)
            .where(TrafficWindow.state == "open")
        ).all()
    closed: dict[str, list[int]] = {}
    for stream, opened_at in candidates:
        try:
            in_force = settings_for(settings, stream)
        except StreamConfigInvalid as exc:  # one stream's configuration must not stop the sweep
            log.error("traffic sweep skips a stream: %s", exc, extra={"stream": stream.name})
            continue
        if not aged(opened_at, in_force):
            continue
        with store.session() as session:
            window = current(session, stream.id)
            if window is not None and aged(window.opened_at, in_force):
                close_traffic_window(window)
                closed[stream.name] = [window.seq]
    if closed:
        log.info("traffic windows closed by age", extra={"closed": closed})
    return closed
