"""The main job's own settings, and its marker, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from helpers import digit_samples

from service.config import Settings
from service.context import Service
from service.demo.home import DEMO_CLASSES, demo_settings, ignored_variables, mark, stream_origin
from service.ingest.samples import get_or_create_stream, ingest


def test_only_a_stream_whose_every_sample_is_marked_is_the_demo_s(service: Service) -> None:
    store, settings = service.store, service.settings
    assert stream_origin(store, "demo") == "absent"
    get_or_create_stream(store, "demo", settings)
    assert stream_origin(store, "demo") == "empty"
    ingest(store, settings, "demo", mark(digit_samples(5, prefix="run")))
    assert stream_origin(store, "demo") == "demo"
    ingest(store, settings, "demo", digit_samples(1, prefix="team"))  # no meta at all
    assert stream_origin(store, "demo") == "other"
    other = [dict(s, meta={"source": "a producer"}) for s in digit_samples(1, prefix="p")]
    ingest(store, settings, "pets", other)
    assert stream_origin(store, "pets") == "other"


def test_production_settings_give_way_to_its_own_home(tmp_path: Path) -> None:
    configured = Settings(
        home=tmp_path / "production",
        database_url="postgresql://learnstream@db/learnstream",
        broker_url="redis://broker:6379/0",
        model_dir=tmp_path / "models",
        default_classes=["cat", "dog"],
        window_size=64,
    )
    demo = demo_settings(configured)
    assert (
        demo.resolved_database_url == f"sqlite:///{Path('.learnstream').resolve()}/learnstream.db"
    )
    assert demo.resolved_model_dir == Path(".learnstream/models").resolve()
    assert (demo.broker_url, demo.result_backend, demo.announce_url) == (
        "memory://",
        "cache+memory://",
        None,
    )
    assert demo.default_classes == DEMO_CLASSES and demo.window_size == 64
    assert ignored_variables(configured, demo) == [
        "LEARNSTREAM_HOME",
        "LEARNSTREAM_DATABASE_URL",
        "LEARNSTREAM_BROKER_URL",
        "LEARNSTREAM_MODEL_DIR",
        "LEARNSTREAM_DEFAULT_CLASSES",
    ]
    kept = demo_settings(configured, use_configured_store=True)
    assert kept.resolved_database_url == configured.resolved_database_url
    assert kept.resolved_model_dir == configured.resolved_model_dir
    assert kept.broker_url == "memory://"


def test_without_production_settings_its_home_is_the_configured_one(tmp_path: Path) -> None:
    configured = Settings(home=tmp_path / "home")
    demo = demo_settings(configured)
    assert demo.resolved_database_url == configured.resolved_database_url
    assert ignored_variables(configured, demo) == []
