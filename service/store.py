"""The store: engine, sessions and schema creation over SQLite or PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import StoreUnavailable, StreamNotFound
from service.schema import Base, Stream

log = logging.getLogger(__name__)

SCHEMA_LOCK = 0x1EA57  # advisory lock key that serialises schema creation on PostgreSQL


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """Owns the database engine; hands out transactional sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Stream rows by name: their id, classes and shape never change once created.
        self.streams: dict[str, Stream] = {}

    def create_schema(self) -> None:
        """Create missing tables; idempotent and safe when several workers start at once."""
        try:
            with self.engine.begin() as conn:
                if not self.is_sqlite:
                    # Concurrent CREATE TABLEs race in PostgreSQL's catalog: serialise them.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                Base.metadata.create_all(conn)
        except OperationalError as exc:
            if self.is_sqlite and "already exists" in str(exc.orig):
                return  # another process created it between our check and our CREATE
            raise StoreUnavailable(f"cannot reach the database: {exc.orig}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            if exc.connection_invalidated or _is_connection_error(exc):
                raise StoreUnavailable(f"cannot reach the database: {exc.orig}") from exc
            raise
        finally:
            session.close()

    def stream(self, session: Session, name: str) -> Stream:
        """The stream called ``name``; raises :class:`StreamNotFound`."""
        stream = session.scalar(select(Stream).where(Stream.name == name))
        if stream is None:
            raise StreamNotFound(f"unknown stream {name!r}")
        return stream

    def dispose(self) -> None:
        self.engine.dispose()


def _is_connection_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        needle in text
        for needle in ("connection", "could not connect", "server closed", "terminating")
    )
