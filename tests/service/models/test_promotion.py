"""Promotion and rollback: one path for the API and the CLI, which checks files first."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import make_settings
from sqlalchemy import select
from typer.testing import CliRunner

from learners.models import build_model
from learners.strategy_state import StrategyState
from service.api.app import create_app
from service.cli import cli
from service.context import Service, set_service
from service.ingest.samples import get_or_create_stream
from service.models.promotion import MANIFEST_MISMATCH, NO_RETIRED, NO_VERSION
from service.models.registry import DIGEST_MISMATCH
from service.queries.listings import list_alerts, list_models
from service.store.schema import Champion

ARCH = {"n_classes": 10, "in_channels": 1, "input_size": 28}
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service.from_settings(make_settings(tmp_path, operator_token=TOKEN))
    set_service(svc)  # the CLI's service
    yield svc
    set_service(None)


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def _write(service: Service, stream_name: str, seed: int) -> int:
    stream = get_or_create_stream(service.store, stream_name, service.settings).stream
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    return service.registry.create_version(
        stream,
        build_model(seed=seed, **ARCH),
        state,
        parent=None,
        strategy="naive",
        params={},
        windows=[1],
        arch=ARCH,
    )


def _statuses(service: Service, stream: str) -> list[tuple[int, str, bool]]:
    return [(m["version"], m["status"], m["champion"]) for m in list_models(service, stream)]


def _pointer(service: Service, stream: str) -> dict[str, Any]:
    with service.store.session() as session:
        row = session.scalar(
            select(Champion).where(Champion.stream_id == service.store.stream(session, stream).id)
        )
        return {"version": row.version, "by": row.changed_by, "reason": row.reason}


def test_the_cli_and_the_api_promote_alike(service: Service, client: TestClient) -> None:
    for stream in ("by-cli", "by-api"):
        for seed in (1, 2):
            _write(service, stream, seed)
    for version in (1, 2):
        cli_run = runner.invoke(
            cli, ["promote", str(version), "--stream", "by-cli", "--by", "eve", "--reason", "r"]
        )
        assert cli_run.exit_code == 0, cli_run.output
        api_run = client.post(
            f"/v1/models/{version}/promote",
            json={"stream": "by-api", "by": "eve", "reason": "r"},
            headers=AUTH,
        )
        assert api_run.status_code == 200, api_run.text
        previous = api_run.json()["previous"]
        assert cli_run.output == f"by-cli: champion v{version} (was v{previous})\n"
    assert (
        _statuses(service, "by-cli")
        == _statuses(service, "by-api")
        == [
            (1, "retired", False),
            (2, "champion", True),
        ]
    )
    assert _pointer(service, "by-cli") == _pointer(service, "by-api")


def test_the_cli_and_the_api_roll_back_alike(service: Service, client: TestClient) -> None:
    for stream in ("by-cli", "by-api"):
        for seed in (1, 2, 3):
            _write(service, stream, seed)
        for version in (1, 2, 3):
            client.post(
                f"/v1/models/{version}/promote",
                json={"stream": stream, "reason": "r"},
                headers=AUTH,
            )
    for expected, previous in ((2, 3), (1, 2)):
        cli_run = runner.invoke(cli, ["rollback", "--stream", "by-cli", "--reason", "bad"])
        assert cli_run.exit_code == 0, cli_run.output
        assert cli_run.output == f"by-cli: champion v{expected} (was v{previous})\n"
        api_run = client.post(
            "/v1/models/rollback", json={"stream": "by-api", "reason": "bad"}, headers=AUTH
        )
        assert api_run.json() == {"stream": "by-api", "champion": expected, "previous": previous}
    assert _statuses(service, "by-cli") == _statuses(service, "by-api")
    assert _pointer(service, "by-cli") == _pointer(service, "by-api")
    assert _pointer(service, "by-cli")["reason"] == "rollback from v2: bad"
    # Every swap is an event, acknowledged as raised: delivered to sinks, never left open.
    events = [
        (a["kind"], a["payload"]["version"], a["payload"]["previous"], a["acknowledged"])
        for a in reversed(list_alerts(service, stream="by-cli"))
    ]
    assert events == [
        ("model.promoted", 1, None, True),
        ("model.promoted", 2, 1, True),
        ("model.promoted", 3, 2, True),
        ("model.rolled_back", 2, 3, True),
        ("model.rolled_back", 1, 2, True),
    ]

    refused = runner.invoke(cli, ["rollback", "--stream", "by-cli", "--reason", "again"])
    detail = client.post(
        "/v1/models/rollback", json={"stream": "by-api", "reason": "again"}, headers=AUTH
    ).json()["detail"]
    assert refused.exit_code == 1
    assert refused.output == f"error: {NO_RETIRED.format(stream='by-cli', current=1)}\n"
    assert detail == NO_RETIRED.format(stream="by-api", current=1)


def test_a_tampered_version_is_refused_by_the_cli_and_the_api(
    service: Service, client: TestClient
) -> None:
    version = _write(service, "s", seed=1)
    path = service.registry.folder("s", version) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one byte changed
    path.write_bytes(bytes(data))

    result = runner.invoke(cli, ["promote", str(version), "--stream", "s"])
    assert result.exit_code == 1
    assert result.output == f"error: {DIGEST_MISMATCH.format(path=path)}\n"  # one line
    response = client.post(
        f"/v1/models/{version}/promote", json={"stream": "s", "reason": "r"}, headers=AUTH
    )
    assert response.status_code == 404
    assert response.json()["detail"] == DIGEST_MISMATCH.format(path=path)
    assert _statuses(service, "s") == [(1, "candidate", False)]


def test_a_rewritten_manifest_does_not_pass_for_the_stored_digests(service: Service) -> None:
    version = _write(service, "s", seed=1)
    folder = service.registry.folder("s", version)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["digests"]["model.safetensors"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))

    result = runner.invoke(cli, ["promote", str(version), "--stream", "s"])
    assert result.exit_code == 1
    assert result.output == f"error: {MANIFEST_MISMATCH.format(stream='s', version=1)}\n"
    assert _statuses(service, "s") == [(1, "candidate", False)]


def test_a_version_missing_on_disk_or_in_the_store_is_refused(service: Service) -> None:
    version = _write(service, "s", seed=1)
    unknown = runner.invoke(cli, ["promote", "7", "--stream", "s"])
    assert unknown.exit_code == 1
    assert unknown.output == f"error: {NO_VERSION.format(stream='s', version=7)}\n"
    shutil.rmtree(service.registry.folder("s", version))
    gone = runner.invoke(cli, ["promote", str(version), "--stream", "s"])
    assert gone.exit_code == 1 and "has no version 1 on disk" in gone.output
    assert _statuses(service, "s") == [(1, "candidate", False)]
