"""Shared fixtures: stores on SQLite and on the real PostgreSQL server, a seeded service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PG_ADMIN_URL, make_settings, play_demo

from service.context import Service, set_service
from service.store.engine import Store
from service.store.schema import Base


def _fresh_pg_database(prefix: str) -> Iterator[str]:
    """Create a PostgreSQL database, yield its URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    yield from _fresh_pg_database("learnstream_test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (worker subprocesses use it), dropped after."""
    yield from _fresh_pg_database("learnstream_one")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL, on an empty schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("pg_database")
    store = Store(url)
    Base.metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    store.dispose()
    yield url


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[Service]:
    svc = Service.from_settings(make_settings(tmp_path, database_url))
    set_service(svc)
    yield svc
    set_service(None)


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    svc = Service.from_settings(make_settings(tmp_path))
    set_service(svc)
    yield svc
    set_service(None)


@pytest.fixture(scope="session")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Service, dict[str, Any]]:
    """A store filled once per session by the short demo (``helpers.SHORT_DEMO``), with
    torch's default threads, and the run's summary; the dashboard and demo tests read it."""
    import logging

    log = logging.getLogger("short_demo")
    return play_demo(tmp_path_factory.mktemp("short_demo") / "home", echo=log.info)
