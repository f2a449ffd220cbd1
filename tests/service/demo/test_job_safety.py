"""`learnstream run` beside production: it plays on its own home and in-process broker, deletes
only what an earlier run created, and leaves no stream behind when it fails.

Each test runs the command in this process (typer's runner), on a short demo: windows of 32
digits, version 1 after 40 training samples and one epoch, no updates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result
from helpers import REDIS_URL, digit_samples
from sqlalchemy import func, select
from typer.testing import CliRunner

import service.demo.job
from service.cli import cli
from service.config import Settings
from service.context import Service, set_service
from service.demo.home import DEMO_SOURCE, HOME_OVERLAP
from service.ingest.samples import ingest
from service.models.compatibility import CHAMPION_INCOMPATIBLE
from service.store.engine import Store
from service.store.schema import Alert, Sample, Stream

runner = CliRunner()
BROKER_DB = 7
BROKER = f"{REDIS_URL}/{BROKER_DB}"
SHORT = {
    "WINDOW_SIZE": "32",
    "BOOTSTRAP_SAMPLES": "40",
    "BOOTSTRAP_EPOCHS": "1",
    "MIN_BOOTSTRAP_ACCURACY": "0",
    "UPDATE_POLICY": "manual",
    "DRIFT_PERMUTATIONS": "100",
    "REFERENCE_SIZE": "20",
    "MIN_DRIFT_GROUP_SIZE": "5",
}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean folder to run in, with only the short demo's LEARNSTREAM_ variables set."""
    for name in list(os.environ):
        if name.startswith("LEARNSTREAM_"):
            monkeypatch.delenv(name)
    for name, value in SHORT.items():
        monkeypatch.setenv(f"LEARNSTREAM_{name}", value)
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    set_service(None)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Redis database 7, flushed, as the production broker; every Redis connection this
    process opens while the test runs is recorded (host, port)."""
    import redis.connection

    redis.Redis.from_url(BROKER).flushdb()
    opened: list[tuple[str, int]] = []
    connect = redis.connection.Connection._connect

    def recording(self: redis.connection.Connection) -> Any:
        opened.append((self.host, self.port))
        return connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", recording)
    yield opened


def _run(*args: str, **variables: str) -> Result:
    env = {f"LEARNSTREAM_{name}": value for name, value in variables.items()}
    result = runner.invoke(cli, ["run", "--windows", "10", *args], env=env)
    set_service(None)
    return result


def _existing_stream(settings: Settings, folder: str) -> dict[str, Any]:
    """A stream ``demo`` as a team's producer made it: samples, a rejection alert, and a
    file in its registry folder; what there is of each."""
    service = Service.from_settings(settings)
    try:
        bad = {"image": "not base64!", "label": 1, "group": "A"}
        ingest(service.store, settings, "demo", [*digit_samples(20, prefix="team"), bad])
    finally:
        service.close()
    models = settings.resolved_model_dir / "demo"
    models.mkdir(parents=True)
    (models / folder).write_text("the team's model")
    return _contents(settings.resolved_database_url, models)


def _contents(url: str, models: Path) -> dict[str, Any]:
    store = Store(url)
    try:
        with store.session() as session:
            streams = session.scalars(select(Stream.name)).all()
            samples = session.scalars(select(Sample.sample_id).order_by(Sample.id)).all()
            alerts = session.execute(select(Alert.id, Alert.kind, Alert.acknowledged)).all()
    finally:
        store.dispose()
    files = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    return {"streams": streams, "samples": samples, "alerts": alerts, "files": files}


def _demo_samples(url: str, stream: str = "demo") -> list[dict[str, Any] | None]:
    """The meta of every sample of ``stream`` in the store at ``url``."""
    store = Store(url)
    try:
        with store.session() as session:
            return list(
                session.scalars(select(Sample.meta).join(Stream).where(Stream.name == stream)).all()
            )
    finally:
        store.dispose()


@pytest.mark.postgres
@pytest.mark.redis
def test_production_variables_leave_the_production_store_and_broker_alone(
    cwd: Path, tmp_path: Path, pg_url: str, broker: list[tuple[str, int]]
) -> None:
    production = {
        "DATABASE_URL": pg_url,
        "BROKER_URL": BROKER,
        "RESULT_BACKEND": BROKER,
        "REDIS_URL": BROKER,
        "HOME": str(tmp_path / "production-home"),
        "MODEL_DIR": str(tmp_path / "production-models"),
        "DEFAULT_CLASSES": "cat,dog,bird",
    }
    settings = Settings(
        database_url=pg_url,
        home=tmp_path / "production-home",
        model_dir=tmp_path / "production-models",
        window_size=32,
    )
    before = _existing_stream(settings, "v1.safetensors")
    opened_before = len(broker)

    result = _run(**production)

    assert result.exit_code == 0, result.output
    opening, notice = result.stdout.splitlines()[:2]
    own = cwd / ".learnstream"
    assert f"store sqlite:///{own / 'learnstream.db'} (its own home)" in opening, opening
    assert f"models in {own / 'models'}, broker memory:// (in-process worker)" in opening
    assert notice.startswith("learnstream run: ignoring the configured "), notice
    assert set(notice.split("configured ")[1].split(";")[0].split(", ")) == {
        f"LEARNSTREAM_{name}" for name in production
    }
    assert _contents(pg_url, settings.resolved_model_dir / "demo") == before
    assert before["samples"] and before["alerts"] and before["files"] == ["v1.safetensors"]
    metas = _demo_samples(f"sqlite:///{own / 'learnstream.db'}")
    assert len(metas) == 10 * 32 and all(m and m["source"] == DEMO_SOURCE for m in metas)
    assert (own / "models" / "demo").is_dir()  # version 1 was trained and served
    assert broker[opened_before:] == [], "the run connected to Redis"
    assert redis.Redis.from_url(BROKER).dbsize() == 0


@pytest.mark.redis
def test_use_configured_store_plays_there_on_its_own_broker(
    cwd: Path, tmp_path: Path, broker: list[tuple[str, int]]
) -> None:
    url = f"sqlite:///{tmp_path / 'production.db'}"
    models = tmp_path / "production-models"
    result = _run(
        "--use-configured-store",
        "--stream",
        "demo2",
        DATABASE_URL=url,
        MODEL_DIR=str(models),
        BROKER_URL=BROKER,
        RESULT_BACKEND=BROKER,
    )

    assert result.exit_code == 0, result.output
    notice = result.stdout.splitlines()[1]
    assert notice == (
        "learnstream run: ignoring the configured LEARNSTREAM_BROKER_URL, "
        "LEARNSTREAM_RESULT_BACKEND"
    )
    assert len(_demo_samples(url, "demo2")) == 10 * 32 and (models / "demo2").is_dir()
    assert not (cwd / ".learnstream").exists()
    assert broker == [] and redis.Redis.from_url(BROKER).dbsize() == 0


def test_its_own_home_must_not_hold_the_configured_store(cwd: Path) -> None:
    """A Redis broker with the store left to its default: that store is ``.learnstream/``."""
    result = _run(BROKER_URL=BROKER)
    home = cwd / ".learnstream"
    assert result.exit_code == 1
    assert result.stderr == f"error: {HOME_OVERLAP.format(home=home, what='database')}\n"
    assert not home.exists()


def test_a_relative_sqlite_url_into_its_home_is_the_same_database(cwd: Path) -> None:
    """The configured store written as a relative path to the very file the demo would use."""
    result = _run(
        DATABASE_URL="sqlite:///.learnstream/learnstream.db", MODEL_DIR=str(cwd / "models")
    )
    home = cwd / ".learnstream"
    assert result.exit_code == 1
    assert result.stderr == f"error: {HOME_OVERLAP.format(home=home, what='database')}\n"


def test_a_stream_of_that_name_it_did_not_create_is_refused_and_kept(
    cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LEARNSTREAM_HOME", str(home))
    settings = Settings(home=home, window_size=32)
    before = _existing_stream(settings, "notes.txt")

    result = _run()

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: stream 'demo' in {settings.resolved_database_url} was not created by "
        "`learnstream run`; it is kept: use --stream OTHER\n"
    )
    assert _contents(settings.resolved_database_url, home / "models" / "demo") == before


@pytest.mark.parametrize("failure", [RuntimeError("injected"), KeyboardInterrupt()])
def test_a_failure_mid_run_leaves_no_stream_behind(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """The first prediction (version 1 is trained and its folder written) fails."""
    real_run_demo = service.demo.job.run_demo
    seen: list[bool] = []

    def failing_run_demo(
        svc: Service, send_samples: Callable[..., Any], _images: Any, plan: Any, **kw: Any
    ) -> dict[str, Any]:
        def send_images(stream: str, images: list[str], *named: list[str]) -> dict[str, Any]:
            seen.append((svc.settings.resolved_model_dir / stream).is_dir())
            raise failure

        return real_run_demo(svc, send_samples, send_images, plan, **kw)

    monkeypatch.setattr(service.demo.job, "run_demo", failing_run_demo)
    result = _run()

    reason = "RuntimeError: injected" if isinstance(failure, RuntimeError) else "interrupted"
    assert seen == [True]
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: learnstream run failed ({reason}); removed the stream 'demo' it created"
    )
    home = cwd / ".learnstream"
    contents = _contents(f"sqlite:///{home / 'learnstream.db'}", home / "models" / "demo")
    assert contents == {"streams": [], "samples": [], "alerts": [], "files": []}


def test_no_reset_with_another_strategy_refuses_in_one_line(cwd: Path) -> None:
    first = _run()
    assert first.exit_code == 0, first.output
    url = f"sqlite:///{cwd / '.learnstream' / 'learnstream.db'}"
    samples = _demo_samples(url)

    refused = _run("--no-reset", STRATEGY="ewc")

    assert refused.exit_code == 1
    assert (
        refused.stderr
        == "error: "
        + CHAMPION_INCOMPATIBLE.format(
            stream="demo",
            version=1,
            saved="'replay'",
            wanted="'ewc'",
            fix="LEARNSTREAM_STRATEGY=replay",
        )
        + "\n"
    )
    assert refused.stdout == ""
    assert _demo_samples(url) == samples

    again = _run()  # --reset (the default) deletes the stream the first run created
    assert again.exit_code == 0, again.output
    store = Store(url)
    try:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Stream)) == 1
            assert session.scalar(select(func.count()).select_from(Sample)) == 10 * 32
    finally:
        store.dispose()
