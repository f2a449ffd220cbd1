"""Small store operations on one stream that several domains need: its row lock and champion."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.store.schema import Champion, Stream


def lock_stream(session: Session, stream_id: int) -> int:
    """Take the stream's row lock for the rest of ``session``'s transaction.

    The UPDATE takes the row lock on PostgreSQL and the write lock on SQLite before anything
    else, which serialises window assignment and window claims within a stream. Returns the
    stream's sample count as read under the lock.
    """
    count = session.scalar(
        update(Stream)
        .where(Stream.id == stream_id)
        .values(lock_ticks=Stream.lock_ticks + 1)
        .returning(Stream.sample_count)
    )
    return int(count or 0)


def champion_version(session: Session, stream_id: int) -> int | None:
    """The version the champion pointer names, or ``None`` before the first promotion."""
    return session.scalar(select(Champion.version).where(Champion.stream_id == stream_id))
