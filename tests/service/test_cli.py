import json

from helpers import digit_samples
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
