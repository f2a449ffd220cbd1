"""The traffic part of the sweep: traffic windows closed by age, and traffic kept within its
bounds.

Traffic counts as samples do for retention, with its own limits, which a stream may set for
itself: rows older than ``traffic_retention`` seconds go, then the oldest beyond
``traffic_max_rows`` (a storage bound: the pixels live in the rows). Traffic trains nothing,
so no window is protected; the windows themselves stay, with the count they received.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.bulk import chunks
from service.store.engine import Store
from service.store.schema import Stream, Traffic, utcnow
from service.streams.configuration import StreamConfigInvalid, settings_for
from service.traffic.windows import close_aged_traffic_windows

log = logging.getLogger(__name__)


def _delete_rows(session: Session, ids: list[int]) -> int:
    for chunk in chunks(ids):
        session.execute(delete(Traffic).where(Traffic.id.in_(chunk)))
    return len(ids)


def retain_traffic(session: Session, stream_id: int, settings: Settings) -> dict[str, int]:
    """Delete the stream's traffic older than ``traffic_retention``, then the oldest beyond
    ``traffic_max_rows``; how many rows went for each reason."""
    cutoff = utcnow() - timedelta(seconds=settings.traffic_retention)
    old = list(
        session.scalars(
            select(Traffic.id).where(Traffic.stream_id == stream_id, Traffic.received_at < cutoff)
        )
    )
    aged = _delete_rows(session, old)
    # The newest traffic_max_rows stay (by arrival: ids grow with received_at).
    beyond = list(
        session.scalars(
            select(Traffic.id)
            .where(Traffic.stream_id == stream_id)
            .order_by(Traffic.id.desc())
            .offset(settings.traffic_max_rows)
        )
    )
    over = _delete_rows(session, beyond)
    return {"max_age": aged, "max_rows": over}


def sweep_traffic(store: Store, settings: Settings) -> dict[str, Any]:
    """Close aged traffic windows and apply every stream's traffic bounds; what was done:
    ``{"closed": {stream: [window numbers]}, "deleted": {stream: {"max_age": n, "max_rows":
    n}}}`` (streams where nothing happened are left out). One stream's failure is logged
    and does not stop the others."""
    closed = close_aged_traffic_windows(store, settings)
    with store.session() as session:
        streams = list(
            session.scalars(
                select(Stream).where(Stream.id.in_(select(Traffic.stream_id).distinct()))
            )
        )
    deleted: dict[str, dict[str, int]] = {}
    for stream in sorted(streams, key=lambda s: s.name):
        try:
            in_force = settings_for(settings, stream)
            with store.session() as session:
                done = retain_traffic(session, stream.id, in_force)
        except StreamConfigInvalid as exc:
            log.error("traffic sweep skips a stream: %s", exc, extra={"stream": stream.name})
            continue
        except Exception:
            log.exception("traffic retention failed for a stream", extra={"stream": stream.name})
            continue
        if any(done.values()):
            deleted[stream.name] = done
            log.info("traffic retention", extra={"stream": stream.name, "deleted": done})
    return {"closed": closed, "deleted": deleted}
