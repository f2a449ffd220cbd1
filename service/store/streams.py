"""Small store operations on one stream that several domains need: its row lock and champion."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.errors import StreamNotFound
from service.store.schema import Champion, Stream


class StreamGone(StreamNotFound):
    """A stream row that a process kept was deleted, or deleted and recreated, since."""


def lock_stream(session: Session, stream_id: int) -> int:
    """Take the stream's row lock for the rest of ``session``'s transaction.

    The UPDATE takes the row lock on PostgreSQL and the write lock on SQLite before anything
    else, which serialises window assignment and window claims within a stream. Returns the
    stream's sample count as read under the lock (0 when the row is gone).
    """
    count = session.scalar(
        update(Stream)
        .where(Stream.id == stream_id)
        .values(lock_ticks=Stream.lock_ticks + 1)
        .returning(Stream.sample_count)
    )
    return int(count or 0)


def lock_kept_stream(session: Session, stream: Stream) -> int:
    """:func:`lock_stream` for a stream row kept from an earlier session (a cache).

    Raises :class:`StreamGone` when the row is gone or is no longer that stream: SQLite
    hands a deleted stream's id to the next stream created, with other classes perhaps; a
    stream whose classes or configuration changed since counts as gone too, so the caller
    reads it again.
    """
    row = session.execute(
        update(Stream)
        .where(Stream.id == stream.id)
        .values(lock_ticks=Stream.lock_ticks + 1)
        .returning(
            Stream.sample_count,
            Stream.name,
            Stream.classes,
            Stream.channels,
            Stream.size,
            Stream.config,
        )
    ).one_or_none()
    kept = (stream.name, stream.classes, stream.channels, stream.size, stream.config)
    if row is None or tuple(row[1:]) != kept:
        raise StreamGone(f"stream {stream.name!r} was deleted or recreated since it was read")
    return int(row.sample_count or 0)


def champion_version(session: Session, stream_id: int) -> int | None:
    """The version the champion pointer names, or ``None`` before the first promotion."""
    return session.scalar(select(Champion.version).where(Champion.stream_id == stream_id))
