"""Settings from the environment: forms a person writes, one-line errors, the table, masking."""

from __future__ import annotations

import pytest

from service.config import (
    BAD_CLASSES,
    JSON_FORMS,
    MASK,
    ONLINE_NOT_FOR_PROPERTIES,
    SETTINGS_TABLE_HEAD,
    Settings,
    effective_settings,
    in_force,
    load_settings,
    mask_url,
    settings_table,
)
from service.errors import LearnstreamError, SettingsInvalid


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LEARNSTREAM_"):
            monkeypatch.delenv(name)


def _error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(f"LEARNSTREAM_{name}", value)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    assert isinstance(info.value, LearnstreamError)
    return str(info.value)


@pytest.mark.parametrize(
    "text", ["cat,dog,bird", " cat , dog,bird ", '["cat","dog","bird"]', '["cat", "dog", "bird"]']
)
def test_classes_are_a_json_list_or_comma_separated(monkeypatch, text: str) -> None:
    monkeypatch.setenv("LEARNSTREAM_DEFAULT_CLASSES", text)
    assert load_settings().default_classes == ["cat", "dog", "bird"]


def test_malformed_classes_say_the_expected_form(monkeypatch) -> None:
    message = _error(monkeypatch, DEFAULT_CLASSES='["cat",')
    assert message == f"LEARNSTREAM_DEFAULT_CLASSES='[\"cat\",': {BAD_CLASSES}"
    assert BAD_CLASSES == (
        'must be a JSON list, e.g. ["cat","dog","bird"], or comma-separated names, '
        "e.g. cat,dog,bird"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/ls", "postgresql+psycopg://u:p@db:5432/ls"),
        ("postgresql://u:p@db/ls", "postgresql+psycopg://u:p@db/ls"),
        ("postgresql+psycopg://u@db/ls", "postgresql+psycopg://u@db/ls"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_postgres_urls_mean_psycopg(monkeypatch, url: str, expected: str) -> None:
    monkeypatch.setenv("LEARNSTREAM_DATABASE_URL", url)
    assert load_settings().resolved_database_url == expected


def test_each_bad_variable_is_one_line_with_its_form(monkeypatch) -> None:
    message = _error(monkeypatch, INPUT_SIZE="big", UPDATE_POLICY="always", WINDOW_SIZE="2")
    assert message.splitlines() == [
        "LEARNSTREAM_INPUT_SIZE='big': must be a valid integer, unable to parse string as an "
        "integer",
        "LEARNSTREAM_WINDOW_SIZE='2': must be greater than or equal to 8",
        "LEARNSTREAM_UPDATE_POLICY='always': must be 'on_drift', 'every_window', 'manual' or "
        "'adaptive'",
    ]


def test_json_settings_say_the_expected_form(monkeypatch) -> None:
    message = _error(monkeypatch, STRATEGY_PARAMS="mem_size=200")
    assert message == f"LEARNSTREAM_STRATEGY_PARAMS must be {JSON_FORMS['strategy_params']}"


def test_rules_over_several_settings_name_their_variables(monkeypatch) -> None:
    message = _error(monkeypatch, STRATEGY="replay", STRATEGY_PARAMS='{"memsize": 5}')
    assert message == (
        "LEARNSTREAM_STRATEGY, LEARNSTREAM_STRATEGY_PARAMS: unknown parameter 'memsize' for "
        "strategy 'replay'; allowed parameters: mem_size, group_balanced, reweigh_groups"
    )


def test_the_properties_space_is_tested_per_window(monkeypatch) -> None:
    message = _error(monkeypatch, DRIFT_FEATURE_SPACE="properties", DRIFT_MODE="online")
    assert message == (
        f"LEARNSTREAM_DRIFT_MODE, LEARNSTREAM_DRIFT_FEATURE_SPACE: {ONLINE_NOT_FOR_PROPERTIES}"
    )
    monkeypatch.setenv("LEARNSTREAM_DRIFT_MODE", "window")
    assert load_settings().drift_feature_space == "properties"  # with the default detector


def test_secrets_are_never_echoed_in_errors(monkeypatch) -> None:
    message = _error(monkeypatch, WEBHOOK_URL="ftp://hooks", WEBHOOK_SECRET="s3cret")
    assert "s3cret" not in message
    assert message == (
        "LEARNSTREAM_WEBHOOK_URL='ftp://hooks': webhook_url must be an http:// or https:// URL"
    )


def test_effective_settings_name_their_source_and_mask_secrets(tmp_path) -> None:
    settings = Settings(
        home=tmp_path,
        operator_token="t0ken",
        webhook_url="https://hooks.example/x",
        webhook_secret="s3cret",
        database_url="postgres://ls:pw@db/ls",
        broker_url="redis://:hunter2@cache:6379/0",
    )
    environ = {"LEARNSTREAM_OPERATOR_TOKEN": "t0ken", "learnstream_broker_url": "x"}
    rows = effective_settings(settings, environ)
    assert set(rows) == set(Settings.model_fields)
    assert rows["operator_token"] == {
        "variable": "LEARNSTREAM_OPERATOR_TOKEN",
        "value": MASK,
        "source": "environment",
    }
    assert rows["webhook_secret"]["value"] == MASK
    assert rows["database_url"]["value"] == "postgresql+psycopg://ls:***@db/ls"
    assert rows["broker_url"] == {
        "variable": "LEARNSTREAM_BROKER_URL",
        "value": "redis://:***@cache:6379/0",
        "source": "environment",
    }
    assert rows["window_size"] == {
        "variable": "LEARNSTREAM_WINDOW_SIZE",
        "value": 256,
        "source": "default",
    }
    assert in_force(settings)["announce_url"] == "redis://:***@cache:6379/0"
    assert "hunter2" not in str(rows) + str(in_force(settings))


def test_mask_url_keeps_everything_but_the_password() -> None:
    assert mask_url("postgresql+psycopg://ls:p%40ss@db:5432/ls") == (
        "postgresql+psycopg://ls:***@db:5432/ls"
    )
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert mask_url("postgresql://ls@db/ls") == "postgresql://ls@db/ls"


def test_the_settings_table_has_one_row_per_setting() -> None:
    table = settings_table()
    lines = table.splitlines()
    assert "\n".join(lines[:2]) == SETTINGS_TABLE_HEAD
    variables = [line.split("|")[1].strip().strip("`") for line in lines[2:]]
    assert variables == [f"LEARNSTREAM_{name.upper()}" for name in Settings.model_fields]
    assert "| `LEARNSTREAM_WINDOW_SIZE` | `256` | Accepted samples that close a window. |" in lines
    assert "| `LEARNSTREAM_DATABASE_URL` | unset |" in table
    assert all(line.count("|") == 4 for line in lines[2:])
