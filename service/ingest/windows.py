"""Windows: samples fill a stream's open window, which closes when full or too old.

A window closes by size as the sample that fills it is committed
(:func:`service.ingest.samples.commit_samples`), by age when the next sample finds it
too old (:func:`open_window`) or when the periodic sweep finds it so
(:func:`close_aged_windows`). Closing happens under the stream's row lock, so a window is
closed once; the ids of the windows closed go back to the caller, who queues them for the
learner.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.engine import Store
from service.store.schema import Stream, Window, as_utc, utcnow
from service.store.streams import lock_stream
from service.streams.configuration import StreamConfigInvalid, settings_for

log = logging.getLogger(__name__)


def close(window: Window, closed: list[int]) -> None:
    """Close ``window`` now and note its id in ``closed``."""
    window.state, window.closed_at = "closed", utcnow()
    closed.append(window.id)


def _aged(window: Window, settings: Settings) -> bool:
    age = (utcnow() - as_utc(window.opened_at)).total_seconds()
    return age >= settings.window_max_age and window.size >= settings.window_min_size


def _current(session: Session, stream_id: int) -> Window | None:
    return session.scalar(
        select(Window).where(Window.stream_id == stream_id, Window.state == "open")
    )


def open_window(session: Session, stream_id: int, settings: Settings, closed: list[int]) -> Window:
    """The stream's open window (the caller holds the stream's row lock); one that has grown
    too old is closed, its id noted in ``closed``, and replaced."""
    window = _current(session, stream_id)
    if window is not None and _aged(window, settings):
        close(window, closed)
        session.flush()
        window = None
    if window is None:
        last = session.scalar(select(func.max(Window.seq)).where(Window.stream_id == stream_id))
        window = Window(stream_id=stream_id, seq=(last or 0) + 1, state="open", size=0)
        session.add(window)
        session.flush()
    return window


def close_aged_windows(store: Store, settings: Settings) -> dict[str, list[int]]:
    """Close every open window older than its stream's ``window_max_age`` (so a slow stream
    still gets checked); returns the closed window ids by stream name."""
    with store.session() as session:
        candidates = session.execute(
            select(Stream, Window.opened_at, Window.size)
            .join(Window, Window.stream_id == Stream.id)
            .where(Window.state == "open")
        ).all()
    closed: dict[str, list[int]] = {}
    for stream, opened_at, size in candidates:
        try:
            in_force = settings_for(settings, stream)
        except StreamConfigInvalid as exc:  # one stream's configuration must not stop the sweep
            log.error("window sweep skips a stream: %s", exc, extra={"stream": stream.name})
            continue
        age = (utcnow() - as_utc(opened_at)).total_seconds()
        if age < in_force.window_max_age or size < in_force.window_min_size:
            continue
        ids: list[int] = []
        with store.session() as session:
            lock_stream(session, stream.id)
            window = _current(session, stream.id)
            if window is not None and _aged(window, in_force):
                close(window, ids)
        if ids:
            closed[stream.name] = ids
            log.info("window closed by age", extra={"stream": stream.name, "window_ids": ids})
    return closed
