import json

from helpers import NO_TRAFFIC, NO_TRAFFIC_DRIFT, digit_samples
from typer.testing import CliRunner

from service.cli import cli
from service.ingest.samples import ingest

runner = CliRunner()


def test_status_alerts_models_json(sqlite_service, monkeypatch) -> None:
    samples = [*digit_samples(70), {"image": "!", "label": 1, "group": "A"}]
    ingest(sqlite_service.store, sqlite_service.settings, "s1", samples)
    result = runner.invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    backlog = data["streams"]["s1"].pop("backlog")
    assert data == {
        "streams": {
            "s1": {
                "samples": 70,
                "rejected": 1,
                "windows": {"open": 1, "closed": 1, "processed": 0},
                "champion": None,
                "adaptation": None,
                "quarantined": {"samples": 0, "windows": 0},
                "served": NO_TRAFFIC,
                "traffic_drift": NO_TRAFFIC_DRIFT,
            }
        }
    }
    assert backlog["samples_waiting"] == 6 and backlog["windows_queued"] == 1
    assert backlog["ingest_rate_per_s"] == round(70 / 60, 3)
    assert 0 <= backlog["learner_lag_s"] < 60
    alerts = json.loads(runner.invoke(cli, ["alerts", "--json"]).output)
    assert [a["kind"] for a in alerts] == ["ingest.rejected"]
    assert json.loads(runner.invoke(cli, ["models", "--stream", "s1", "--json"]).output) == []


def test_user_mistakes_are_one_line_errors(sqlite_service) -> None:
    result = runner.invoke(cli, ["models", "--stream", "nope"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: unknown stream 'nope'"
    result = runner.invoke(cli, ["promote", "3", "--stream", "nope"])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_the_cli_and_the_api_list_windows_alike(sqlite_service) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    ingest(sqlite_service.store, sqlite_service.settings, "s1", digit_samples(70))
    result = runner.invoke(cli, ["windows", "--stream", "s1", "--json"])
    assert result.exit_code == 0, result.output
    with TestClient(create_app(sqlite_service)) as client:
        by_api = client.get("/v1/windows", params={"stream": "s1"}).json()
    assert json.loads(result.output) == by_api
    assert [(w["seq"], w["state"], w["size"]) for w in by_api] == [
        (1, "closed", 64),
        (2, "open", 6),
    ]
    table = runner.invoke(cli, ["windows", "--stream", "s1"]).output.splitlines()
    assert table == [
        "window   1 closed        64 samples -",
        "window   2 open           6 samples -",
    ]
    unknown = runner.invoke(cli, ["windows", "--stream", "nope"])
    assert unknown.exit_code == 1 and unknown.output == "error: unknown stream 'nope'\n"


def test_every_command_defaults_to_the_default_stream_setting(sqlite_service, monkeypatch) -> None:
    ingest(sqlite_service.store, sqlite_service.settings, "team", digit_samples(70))
    monkeypatch.setenv("LEARNSTREAM_DEFAULT_STREAM", "team")
    for command in (["windows"], ["drift"], ["models"], ["report", "--json"]):
        result = runner.invoke(cli, [*command])
        assert result.exit_code == 0, (command, result.output)
    windows = json.loads(runner.invoke(cli, ["windows", "--json"]).output)
    assert [w["seq"] for w in windows] == [1, 2]
    assert json.loads(runner.invoke(cli, ["report", "--json"]).output)["stream"] == "team"
    for command in (["promote", "1"], ["rollback"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 1 and "'team'" in result.output, (command, result.output)
    monkeypatch.delenv("LEARNSTREAM_DEFAULT_STREAM")
    result = runner.invoke(cli, ["windows"])
    assert result.exit_code == 1 and result.output == "error: unknown stream 'default'\n"


def test_report_takes_the_stream_as_option_or_argument(sqlite_service) -> None:
    from service.cli import REPORT_TWO_STREAMS

    ingest(sqlite_service.store, sqlite_service.settings, "s1", digit_samples(70))
    by_option = json.loads(runner.invoke(cli, ["report", "--stream", "s1", "--json"]).output)
    by_argument = json.loads(runner.invoke(cli, ["report", "s1", "--json"]).output)
    assert by_option["stream"] == by_argument["stream"] == "s1"
    assert runner.invoke(cli, ["report", "s1", "--stream", "s1", "--json"]).exit_code == 0
    both = runner.invoke(cli, ["report", "s1", "--stream", "s2", "--json"])
    message = REPORT_TWO_STREAMS.format(positional="s1", option="s2")
    assert both.exit_code == 1 and both.output == f"error: {message}\n"


def test_models_list_the_same_windows_as_the_api(sqlite_service) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from learners.models import build_model
    from learners.strategy_state import StrategyState
    from service.api.app import create_app
    from service.ingest.samples import get_or_create_stream
    from service.store.schema import Stream, Window

    ingest(sqlite_service.store, sqlite_service.settings, "first", digit_samples(64, seed=1))
    ingest(sqlite_service.store, sqlite_service.settings, "s1", digit_samples(70, seed=2))
    with sqlite_service.store.session() as session:
        query = select(Window.id).join(Stream).where(Stream.name == "s1", Window.seq == 1)
        window_id = session.scalar(query)
    assert window_id != 1
    arch = {"n_classes": 10, "in_channels": 1, "input_size": 28}
    sqlite_service.registry.create_version(
        get_or_create_stream(sqlite_service.store, "s1", sqlite_service.settings).stream,
        build_model(seed=0, **arch),
        StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []}),
        parent=None,
        strategy="naive",
        params={},
        windows=[window_id],
        arch=arch,
    )
    by_cli = json.loads(runner.invoke(cli, ["models", "--stream", "s1", "--json"]).output)
    with TestClient(create_app(sqlite_service)) as client:
        by_api = client.get("/v1/models", params={"stream": "s1"}).json()
    assert by_cli == by_api and by_api[0]["windows"] == [1]
    table = runner.invoke(cli, ["models", "--stream", "s1"]).output
    assert "windows [1]" in table


def test_status_json_and_the_api_have_the_same_fields(sqlite_service) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    ingest(sqlite_service.store, sqlite_service.settings, "s1", digit_samples(70))
    by_cli = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    with TestClient(create_app(sqlite_service)) as client:
        by_api = client.get("/v1/status").json()
    for data in (by_cli, by_api):  # the rate and the lag move with the clock
        for field in ("ingest_rate_per_s", "learner_lag_s"):
            data["streams"]["s1"]["backlog"].pop(field)
    assert by_cli == by_api
