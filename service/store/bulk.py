"""Many sample rows in one statement, inside the caller's transaction.

On PostgreSQL the rows go through ``COPY ... FROM STDIN (FORMAT BINARY)`` on the session's
own connection (psycopg's ``cursor.copy()``), so they commit or roll back with everything
else the session did; PostgreSQL parses no SQL per row and psycopg builds no query text.
On SQLite one multi-row INSERT ("insertmanyvalues") does the same work.

Lookups of a call's ids and digests bind one array on PostgreSQL (``= ANY(:values)``), so
the statement's text is the same whatever the call's size and the server keeps it prepared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, any_, bindparam, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.types import String

from service.errors import StoreUnavailable
from service.store.schema import Sample

T = TypeVar("T")
CHUNK = 500  # values per IN list: bounded statements on every backend


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in consecutive slices of at most ``size`` (for bounded IN lists).

    >>> [list(c) for c in chunks([1, 2, 3], 2)]
    [[1, 2], [3]]
    """
    for start in range(0, len(values), size):
        yield values[start : start + size]


# (attribute of Sample, its column, its PostgreSQL type for a binary COPY)
_COPY_COLUMNS = (
    ("stream_id", "stream_id", "int4"),
    ("sample_id", "sample_id", "text"),
    ("seq", "seq", "int4"),
    ("label", "label", "int4"),
    ("group", "group_name", "text"),
    ("split", "split", "text"),
    ("window_id", "window_id", "int4"),
    ("received_at", "received_at", "timestamptz"),
    ("meta", "meta", "json"),
    ("image_digest", "image_digest", "text"),
    ("content_digest", "content_digest", "text"),
    ("pixels", "pixels", "bytea"),
)
_COPY = (
    f"COPY {Sample.__tablename__} ({', '.join(c for _, c, _ in _COPY_COLUMNS)}) "
    "FROM STDIN (FORMAT BINARY)"
)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_samples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts keyed by :class:`Sample`'s attributes, every one of
    ``_COPY_COLUMNS``) in the session's transaction."""
    if not rows:
        return
    if not is_postgresql(session):
        # With RETURNING, SQLAlchemy batches the rows into one cached multi-row INSERT
        # ("insertmanyvalues"): one round trip per call instead of one per row.
        session.execute(insert(Sample).returning(Sample.id), list(rows))
        return
    session.flush()  # the windows the rows point at exist before the COPY
    driver = session.connection().connection.driver_connection
    if driver is None:  # the pool invalidated the session's connection
        raise StoreUnavailable("cannot reach the database: its connection was closed")
    with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.set_types([kind for _, _, kind in _COPY_COLUMNS])
        for row in rows:
            copy.write_row(tuple(row[key] for key, _, _ in _COPY_COLUMNS))


def any_of(
    session: Session, column: InstrumentedAttribute[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL, ``IN`` elsewhere."""
    if is_postgresql(session):
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
    return column.in_(list(values))
