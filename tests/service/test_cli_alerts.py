"""`learnstream alerts` lists and `learnstream alerts ack ID` acknowledges, on the real store."""

from __future__ import annotations

import json
from datetime import datetime

from fastapi.testclient import TestClient
from helpers import digit_samples
from typer.testing import CliRunner

from service.api.app import create_app
from service.cli import cli
from service.context import Service
from service.ingest.samples import ingest

runner = CliRunner()
BAD = {"image": "not base64!", "label": 1, "group": "A"}


def _two_alerts(service: Service) -> list[dict]:
    for stream in ("s1", "s2"):
        ingest(service.store, service.settings, stream, [*digit_samples(2), BAD])
    return json.loads(runner.invoke(cli, ["alerts", "--json"]).output)


def test_ack_records_who_and_when_and_the_listing_shows_it(sqlite_service: Service) -> None:
    first, second = _two_alerts(sqlite_service)  # newest first
    assert first["subject"] == "s2" and not first["acknowledged"]

    result = runner.invoke(cli, ["alerts", "ack", str(second["id"]), "--by", "alice"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"#{second['id']} ingest.rejected acknowledged by alice at ")

    listed = {a["id"]: a for a in json.loads(runner.invoke(cli, ["alerts", "--json"]).output)}
    acked = listed[second["id"]]
    assert acked["acknowledged"] and acked["acknowledged_by"] == "alice"
    acked_at = datetime.fromisoformat(acked["acknowledged_at"])
    assert abs((acked_at - datetime.now().astimezone()).total_seconds()) < 60
    assert not listed[first["id"]]["acknowledged"]

    still_open = json.loads(runner.invoke(cli, ["alerts", "--open", "--json"]).output)
    assert [a["id"] for a in still_open] == [first["id"]]
    text = runner.invoke(cli, ["alerts", "--stream", "s1"]).output
    assert text.startswith(f"#{second['id']} ") and "(acknowledged)" in text

    # Acknowledging again keeps the first acknowledgement, as the API does.
    again = runner.invoke(cli, ["alerts", "ack", str(second["id"]), "--json", "--by", "bob"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == acked


def test_cli_and_api_acknowledge_through_the_same_path(tmp_path) -> None:
    from helpers import make_settings

    from service.context import set_service

    service = Service.from_settings(make_settings(tmp_path, operator_token="t0ken"))
    set_service(service)
    try:
        first, second = _two_alerts(service)
        by_cli = json.loads(
            runner.invoke(cli, ["alerts", "ack", str(first["id"]), "--json"]).output
        )
        with TestClient(create_app(service)) as client:
            by_api = client.post(
                f"/v1/alerts/{second['id']}/ack", headers={"Authorization": "Bearer t0ken"}
            ).json()
        for alert in (by_cli, by_api):
            assert alert["acknowledged"] and alert["acknowledged_by"] == "operator"
            assert alert["acknowledged_at"] is not None
        assert set(by_cli) == set(by_api)
    finally:
        set_service(None)


def test_an_unknown_alert_is_one_error_line_and_exit_1(sqlite_service: Service) -> None:
    result = runner.invoke(cli, ["alerts", "ack", "4242"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: no alert 4242"
    result = runner.invoke(cli, ["alerts", "ack", "1", "--by", ""])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --by must be 1 to 128 characters"
    assert runner.invoke(cli, ["alerts", "ack", "0"]).exit_code == 2  # a usage error
    assert "Traceback" not in result.output
