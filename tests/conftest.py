"""Shared fixtures: stores on SQLite and on the real PostgreSQL server, a seeded service."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.context import Service, set_service
from service.schema import Base
from service.store import Store

PG_ADMIN_URL = os.environ.get(
    "LEARNSTREAM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("LEARNSTREAM_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import psycopg

    name = f"learnstream_test_{uuid.uuid4().hex[:10]}"
    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL, on an empty schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("pg_database")
    store = Store(url)
    Base.metadata.drop_all(store.engine)
    store.dispose()
    yield url


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides) -> Settings:
    """Small, fast settings for tests."""
    values = {
        "home": tmp_path / "home",
        "database_url": database_url,
        "window_size": 64,
        "bootstrap_samples": 40,
        "drift_permutations": 300,
        "reference_size": 300,
        "min_drift_group_size": 15,
        "min_group_size": 20,
        **overrides,
    }
    return Settings(**values)


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
