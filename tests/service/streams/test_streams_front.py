"""``learnstream streams`` and ``/v1/streams`` call the same catalog and say the same things."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import make_settings
from typer.testing import CliRunner

from service.api.app import create_app
from service.cli import cli
from service.context import Service, set_service

runner = CliRunner()
TOKEN = "streams-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service.from_settings(make_settings(tmp_path, operator_token=TOKEN))
    set_service(svc)
    yield svc
    set_service(None)


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_creates_shows_lists_and_updates(service: Service, tmp_path: Path) -> None:
    config = tmp_path / "pets.toml"
    config.write_text(
        'classes = ["cat", "dog"]\n[input]\nchannels = 3\nsize = 16\n'
        '[strategy]\nname = "replay"\nparams = {mem_size = 40}\n[settings]\nwindow_size = 16\n'
    )
    code, out, err = _cli(
        "streams", "create", "pets", "--from-file", str(config), "--classes", "cat,dog,bird"
    )
    assert code == 0, err
    assert "pets: 3 classes cat,dog,bird; 3x16x16; small_cnn" in out
    code, out, _ = _cli("streams", "show", "pets", "--json")
    shown = json.loads(out)
    assert shown["strategy"] == {"name": "replay", "params": {"mem_size": 40}}
    assert shown["settings"]["window_size"] == 16 and shown["input"]["size"] == 16
    code, out, _ = _cli("streams", "list", "--json")
    assert [row["name"] for row in json.loads(out)] == ["pets"]

    code, out, err = _cli(
        "streams", "update", "pets", "--gate-tolerance", "0.05", "--add-class", "fish"
    )
    assert code == 0, err
    assert "gate_tolerance = 0.05" in out and "'fish' added" in out
    code, _, err = _cli("streams", "update", "pets", "--arch", "torchvision:resnet18")
    assert code == 1 and err.startswith("error: model_arch: cannot change once the stream exists")
    assert len(err.strip().splitlines()) == 1
    code, _, err = _cli("streams", "show", "nope")
    assert (code, err.strip()) == (1, "error: unknown stream 'nope'")
    code, _, err = _cli("streams", "create", "pets")
    assert code == 1 and "exists" in err
    shown = json.loads(_cli("streams", "show", "pets", "--json")[1])
    assert shown["classes"] == ["cat", "dog", "bird", "fish"]
    assert shown["settings"]["gate_tolerance"] == 0.05
    assert shown["model"]["arch"] == "small_cnn"


def test_the_api_creates_reads_and_patches_with_the_token(service: Service) -> None:
    body = {"name": "api", "classes": ["a", "b"], "settings": {"window_size": 24}}
    with TestClient(create_app(service)) as client:
        assert client.post("/v1/streams", json=body).status_code == 401
        created = client.post("/v1/streams", json=body, headers=AUTH)
        assert created.status_code == 201, created.text
        assert created.json()["settings"]["window_size"] == 24
        again = client.post("/v1/streams", json=body, headers=AUTH)
        assert again.status_code == 409 and again.json()["error"] == "stream_exists"
        bad = client.post(
            "/v1/streams", json={"name": "x", "model": {"arch": "timm:nope"}}, headers=AUTH
        )
        assert bad.status_code == 422 and bad.json()["detail"].startswith("arch:")
        assert [s["name"] for s in client.get("/v1/streams").json()] == ["api"]
        assert client.get("/v1/streams/api").json()["classes"] == ["a", "b"]
        assert client.get("/v1/streams/none").status_code == 404
        patch = {"settings": {"drift_p_value": 0.05}, "add_classes": ["c"]}
        assert client.patch("/v1/streams/api", json=patch).status_code == 401
        patched = client.patch("/v1/streams/api", json=patch, headers=AUTH)
        assert patched.status_code == 200, patched.text
        assert patched.json()["classes"] == ["a", "b", "c"]
        assert patched.json()["settings"]["drift_p_value"] == 0.05
        refused = client.patch("/v1/streams/api", json={"model": {"train": "head"}}, headers=AUTH)
        assert refused.status_code == 409
        assert refused.json()["detail"].startswith("train_layers: cannot change")
        assert client.get("/v1/streams/api").json()["model"]["train"] == "all"
