"""The store: engine, sessions and schema creation over SQLite or PostgreSQL."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from service.errors import StoreUnavailable, StreamNotFound
from service.store.images import DatabaseImages, ImageStore
from service.store.schema import Stream

log = logging.getLogger(__name__)

SQLITE_BUSY_SECONDS = 30
SCHEMA_LOCK = 0x1EA57  # advisory lock key that serialises schema creation on PostgreSQL


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    # Switching to WAL needs a lock that a process creating the schema may hold for seconds,
    # and SQLite may refuse the switch at once ("database is locked") without waiting on the
    # busy timeout: retry it until the timeout has passed.
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(conn: Connection, revision: str = "head") -> None:
    """Upgrade the schema on ``conn`` to ``revision`` (Alembic scripts in
    service/store/migrations)."""
    from alembic import command
    from alembic.config import Config

    # Alembic announces its dialect plugin and DDL mode at INFO on every start: noise in workers.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


class Store:
    """Owns the database engine and the image store; hands out transactional sessions."""

    def __init__(self, url: str, images: ImageStore | None = None) -> None:
        self.url = url
        self.images = images or DatabaseImages()
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        # Sessions carry the image store, so readers of samples find the pixels' home.
        self._sessions = sessionmaker(
            self.engine, expire_on_commit=False, info={"images": self.images}
        )
        # Stream rows by name: their id, classes and shape never change once created.
        self.streams: dict[str, Stream] = {}

    def create_schema(self, revision: str = "head") -> None:
        """Create or upgrade the schema with Alembic; safe when several workers start at once."""
        try:
            with self.engine.begin() as conn:
                if self.is_sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # one migrator at a time
                else:
                    # Concurrent DDL races in PostgreSQL's catalog: serialise the migrators.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                migrate(conn, revision)
        except OperationalError as exc:
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

    def listen(self, name: str, fn: Callable[..., None]) -> None:
        """Attach the session event ``name`` (e.g. ``after_commit``) to this store's sessions."""
        event.listen(self._sessions, name, fn)

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
