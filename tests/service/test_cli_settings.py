"""Settings and start-up checks on the command line: one line, exit 1, never a traceback."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learners.models import build_model
from learners.strategy_state import StrategyState
from service.cli import LISTING_WIDTH, cli
from service.config import BAD_CLASSES, MASK, Settings
from service.context import Service
from service.ingest.samples import get_or_create_stream
from service.models.compatibility import CHAMPION_INCOMPATIBLE, check_champions
from service.store.schema import Stream
from workers.app import BROKER_DOWN, MEMORY_BROKER, STORE_DOWN, check_store

runner = CliRunner()
REDIS = os.environ.get("LEARNSTREAM_TEST_REDIS", "redis://127.0.0.1:6379") + "/13"
ARCH = {"n_classes": 10, "in_channels": 1, "input_size": 28}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean LEARNSTREAM_ environment with its home in tmp_path."""
    for name in list(os.environ):
        if name.startswith("LEARNSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEARNSTREAM_HOME", str(tmp_path / "home"))
    return {}


def _invoke(args: list[str], **variables: str):  # type: ignore[no-untyped-def]
    env = {f"LEARNSTREAM_{name}": value for name, value in variables.items()}
    return runner.invoke(cli, args, env=env)


@pytest.mark.parametrize(
    "args", [["status"], ["models"], ["alerts"], ["config"], ["worker"], ["submit", "--demo"]]
)
def test_a_malformed_setting_is_one_line_for_every_command(env, args: list[str]) -> None:
    result = _invoke(args, DEFAULT_CLASSES='["cat",')
    assert result.exit_code == 1
    assert result.output == f"error: LEARNSTREAM_DEFAULT_CLASSES='[\"cat\",': {BAD_CLASSES}\n"


def test_several_bad_settings_are_one_line_each(env) -> None:
    result = _invoke(["status"], INPUT_SIZE="big", SEED="x")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: LEARNSTREAM_INPUT_SIZE='big': must be a valid integer, unable to parse string "
        "as an integer",
        "error: LEARNSTREAM_SEED='x': must be a valid integer, unable to parse string as an "
        "integer",
    ]


def test_a_worker_on_the_memory_broker_refuses_at_once(env) -> None:
    result = _invoke(["worker"])
    assert result.exit_code == 1
    assert result.output == f"error: {MEMORY_BROKER}\n"


def test_a_worker_whose_broker_is_unreachable_says_so(env) -> None:
    result = _invoke(["worker"], BROKER_URL="redis://:pw@127.0.0.1:1/0")
    assert result.exit_code == 1
    prefix = "error: " + BROKER_DOWN.format(url=f"redis://:{MASK}@127.0.0.1:1/0", reason="")
    assert result.output.startswith(prefix) and "Connection refused" in result.output
    assert len(result.output.splitlines()) == 1


def test_a_worker_whose_database_is_unreachable_says_so(env) -> None:
    url = "postgres://nobody:pw@127.0.0.1:1/x"
    result = _invoke(["worker"], BROKER_URL=REDIS, DATABASE_URL=url)
    assert result.exit_code == 1
    masked = f"postgresql+psycopg://nobody:{MASK}@127.0.0.1:1/x"
    assert result.output.startswith("error: " + STORE_DOWN.format(url=masked, reason=""))
    assert "Connection refused" in result.output and len(result.output.splitlines()) == 1


def _digit_folder(folder: Path, count: int) -> Path:
    from helpers import digit_samples

    for sample in digit_samples(count, seed=8):
        path = folder / str(sample["label"]) / f"{sample['id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(sample["image"]))
    return folder


def test_submit_on_the_memory_broker_refuses_at_once(env, tmp_path) -> None:
    result = _invoke(["submit", str(_digit_folder(tmp_path / "images", 3))])
    assert result.exit_code == 1
    assert result.output == f"error: {MEMORY_BROKER}\n"


def test_submit_refuses_a_batch_over_the_call_limit_at_once(env, tmp_path) -> None:
    folder = _digit_folder(tmp_path / "images", 3)
    result = _invoke(["submit", str(folder), "--batch", "5000"], BROKER_URL=REDIS)
    assert result.exit_code == 1
    assert result.output.startswith("error: --batch 5000 exceeds LEARNSTREAM_MAX_SAMPLES_PER_CALL")
    assert len(result.output.splitlines()) == 1


def test_submit_to_an_unreachable_broker_says_so_in_one_line(env, tmp_path) -> None:
    folder = _digit_folder(tmp_path / "images", 3)
    result = _invoke(["submit", str(folder)], BROKER_URL="redis://127.0.0.1:1/0")
    assert result.exit_code == 1
    assert result.output.startswith("error: broker: cannot connect to redis://127.0.0.1:1/0")
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output


def test_submit_with_no_worker_gives_up_after_the_timeout(env, tmp_path) -> None:
    import redis

    from service.cli import SUBMIT_NO_ANSWER

    folder = _digit_folder(tmp_path / "images", 5)
    redis.Redis.from_url(REDIS).flushdb()
    started = time.monotonic()
    try:
        result = _invoke(
            ["submit", str(folder), "--batch", "2"],
            BROKER_URL=REDIS,
            RESULT_BACKEND=REDIS,
            SUBMIT_TIMEOUT="1.5",
        )
    finally:
        redis.Redis.from_url(REDIS).flushdb()
    waited = time.monotonic() - started
    print(f"gave up after {waited:.1f} s (timeout 1.5 s)")
    assert result.exit_code == 1 and waited < 30
    expected = SUBMIT_NO_ANSWER.format(timeout=1.5, broker=REDIS, answered=0, total=5)
    assert result.output.splitlines()[-1] == f"error: {expected}"


def _champion(service: Service, strategy: str, params: dict) -> Stream:
    stream = get_or_create_stream(service.store, "pets", service.settings).stream
    state = StrategyState(strategy, 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    version = service.registry.create_version(
        stream,
        build_model(seed=0, **ARCH),
        state,
        parent=None,
        strategy=strategy,
        params={**params, "epochs": 10, "lr": 0.05},
        windows=[1],
        arch=ARCH,
    )
    service.registry.promote(stream.id, version, by="test", reason="first")
    return stream


def test_a_learner_refuses_a_strategy_its_champion_cannot_continue(tmp_path, env) -> None:
    home = tmp_path / "home"
    service = Service.from_settings(Settings(home=home))
    try:
        _champion(service, "replay", {"mem_size": 200})
    finally:
        service.close()
    result = _invoke(["worker", "-Q", "learn"], BROKER_URL=REDIS, STRATEGY="ewc")
    assert result.exit_code == 1
    assert (
        result.output
        == "error: "
        + CHAMPION_INCOMPATIBLE.format(
            stream="pets",
            version=1,
            saved="'replay'",
            wanted="'ewc'",
            fix="LEARNSTREAM_STRATEGY=replay",
        )
        + "\n"
    )


def test_sizes_carry_over_but_the_buffer_policy_does_not(sqlite_service: Service) -> None:
    _champion(sqlite_service, "replay", {"mem_size": 200})
    store, base = sqlite_service.store, sqlite_service.settings
    assert check_champions(store, base) is None  # mem_size 500: the buffer is resized
    assert check_champions(store, base.model_copy(update={"strategy_params": {}})) is None
    balanced = base.model_copy(update={"strategy_params": {"group_balanced": True}})
    assert check_champions(store, balanced) == CHAMPION_INCOMPATIBLE.format(
        stream="pets",
        version=1,
        saved="'replay' (group_balanced=False)",
        wanted="'replay' (group_balanced=True)",
        fix="LEARNSTREAM_STRATEGY_PARAMS='{\"mem_size\": 200}'",
    )


def test_config_shows_sources_and_masks_secrets(env) -> None:
    result = _invoke(
        ["config", "--json"],
        OPERATOR_TOKEN="t0ken",
        DATABASE_URL="postgresql://ls:pw@db/ls",
        WINDOW_SIZE="64",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = data["settings"]
    assert rows["window_size"] == {
        "variable": "LEARNSTREAM_WINDOW_SIZE",
        "value": 64,
        "source": "environment",
    }
    assert rows["seed"]["source"] == "default"
    assert rows["operator_token"]["value"] == MASK
    assert data["in_force"]["database_url"] == f"postgresql+psycopg://ls:{MASK}@db/ls"
    assert "t0ken" not in result.output and ":pw@" not in result.output
    text = _invoke(["config"], OPERATOR_TOKEN="t0ken").output
    assert "t0ken" not in text
    expected = ["LEARNSTREAM_WINDOW_SIZE", "256", "(default)"]
    assert any(line.split() == expected for line in text.splitlines())


def test_the_store_check_does_not_log_alembic_set_up(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    check_store(Settings(home=tmp_path / "fresh"))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_listings_show_one_short_line_with_the_full_text_in_json(sqlite_service) -> None:
    from service.alerts.records import raise_alert

    stream = _champion(sqlite_service, "naive", {})
    long = "covariate drift in groups A, B " + "x" * 300 + "\nsecond line"
    with sqlite_service.store.session() as session:
        raise_alert(
            session,
            stream_id=stream.id,
            kind="drift.covariate",
            severity="warning",
            subject="pets",
            message=long,
            payload={},
        )
    reasons = ["group A lost 0.1 " + "y" * 200, "group B too small", "gap widened"]
    sqlite_service.registry.set_status(stream.id, 1, "champion", {"reasons": reasons})

    line = runner.invoke(cli, ["alerts", "--open"]).output.splitlines()  # not the v1 event
    assert len(line) == 1
    shown = line[0].split("drift.covariate", 1)[1].strip()
    assert shown == long[: LISTING_WIDTH - 1] + "\u2026"
    assert json.loads(runner.invoke(cli, ["alerts", "--json"]).output)[0]["message"] == long

    models = runner.invoke(cli, ["models", "--stream", "pets"]).output.splitlines()
    assert len(models) == 1
    suffix = " (+2 more)"
    assert models[0].endswith(reasons[0][: LISTING_WIDTH - len(suffix) - 1] + "\u2026" + suffix)
    listed = json.loads(runner.invoke(cli, ["models", "--stream", "pets", "--json"]).output)
    assert listed[0]["gate_report"]["reasons"] == reasons


def test_a_stream_with_its_own_strategy_is_checked_against_it(sqlite_service: Service) -> None:
    from service.streams.catalog import update_stream

    store, base = sqlite_service.store, sqlite_service.settings
    _champion(sqlite_service, "ewc", {})
    assert check_champions(store, base) is not None  # the global strategy is replay
    with store.session() as session:  # the stream says ewc itself (as `streams create` stores)
        stream = session.query(Stream).filter_by(name="pets").one()
        stream.config = {"strategy": "ewc"}
    store.streams.clear()
    assert check_champions(store, base) is None
    update_stream(store, base, "pets", {"strategy_params": {"ewc_lambda": 2.0}})
    assert check_champions(store, base) is None


def test_a_worker_on_a_device_this_machine_lacks_exits_with_one_line(env) -> None:
    result = _invoke(
        ["worker", "-Q", "predict"], BROKER_URL=REDIS, RESULT_BACKEND=REDIS, DEVICE="cuda:99"
    )
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: LEARNSTREAM_DEVICE: device: cuda:99 asked for"), line
    bad = _invoke(["config"], DEVICE="gpu")
    assert bad.exit_code == 1 and "LEARNSTREAM_DEVICE='gpu'" in bad.stderr
