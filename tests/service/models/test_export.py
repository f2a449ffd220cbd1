"""Exported champions: ONNX, TorchScript and safetensors give PyTorch's logits and carry the
preprocessing; the CLI and the API export alike, the API only with the operator token."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import make_settings
from safetensors import safe_open
from typer.testing import CliRunner

from learners.models import build_model
from learners.strategy_state import StrategyState
from service.api.app import create_app
from service.cli import cli
from service.context import Service, set_service
from service.ingest.samples import get_or_create_stream
from service.models.export import METADATA_KEYS, export_version

TOKEN = "t0ken"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLASSES = [str(c) for c in range(10)]
runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = make_settings(tmp_path, operator_token=TOKEN, input_channels=3, input_size=32)
    svc = Service.from_settings(settings)
    set_service(svc)
    yield svc
    set_service(None)
    svc.close()


def _write(service: Service, arch: str = "torchvision:resnet18") -> tuple[int, torch.nn.Module]:
    stream = get_or_create_stream(service.store, "photos", service.settings).stream
    model = build_model(
        name=arch, n_classes=10, in_channels=3, input_size=32, seed=1, mean=MEAN, std=STD
    )
    version = service.registry.create_version(
        stream,
        model,
        StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []}),
        parent=None,
        strategy="naive",
        params={},
        windows=[1],
        arch=model.arch,
    )
    return version, model.eval()


def _images() -> torch.Tensor:
    return torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "timm:mobilenetv3_small_050"])
def test_onnx_gives_pytorchs_logits_and_carries_the_preprocessing(
    service: Service, tmp_path: Path, arch: str
) -> None:
    version, model = _write(service, arch)
    (tmp_path / "out").mkdir()  # a folder: the artifact is named in it
    artifact = export_version(service, "photos", version, "onnx", tmp_path / "out")
    assert artifact.path == tmp_path / "out" / f"photos-v{version:04d}.onnx"
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    x = _images()
    (logits,) = session.run(["logits"], {"pixels": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    difference = float(np.abs(logits - expected).max())
    print(f"{arch}: max abs difference {difference:.2e} on {len(x)} images")
    assert logits.shape == (32, 10) and difference < 1e-4
    props = {p.key: json.loads(p.value) for p in onnx.load(str(artifact.path)).metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert props["learnstream.input_size"] == [32, 32] and props["learnstream.channels"] == 3
    assert props["learnstream.mean"] == pytest.approx(MEAN)
    assert props["learnstream.std"] == pytest.approx(STD)
    assert props["learnstream.classes"] == CLASSES and props["learnstream.version"] == version


def test_torchscript_and_safetensors_keep_the_model(service: Service, tmp_path: Path) -> None:
    version, model = _write(service)
    x = _images()[:4]
    script = export_version(service, "photos", version, "torchscript", tmp_path / "m.pt")
    extra = {"learnstream.json": ""}
    loaded = torch.jit.load(str(script.path), _extra_files=extra)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert json.loads(json.loads(extra["learnstream.json"])["learnstream.version"]) == version
    weights = export_version(service, "photos", version, "safetensors", tmp_path / "m.safetensors")
    with safe_open(str(weights.path), "pt") as f:
        assert json.loads(f.metadata()["learnstream.classes"]) == CLASSES
        assert torch.equal(f.get_tensor("classifier.weight"), model.head.weight)


def test_the_api_exports_with_the_token_only(service: Service) -> None:
    version, model = _write(service)
    with TestClient(create_app(service)) as client:
        url = f"/v1/models/{version}/artifact?stream=photos&format=onnx"
        assert client.get(url).status_code == 401
        answer = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        meta = json.loads(answer.headers["x-learnstream-metadata"])
        assert json.loads(meta["learnstream.version"]) == version
        session = ort.InferenceSession(answer.content, providers=["CPUExecutionProvider"])
        x = _images()[:2]
        (logits,) = session.run(None, {"pixels": x.numpy()})
        with torch.no_grad():
            assert np.abs(logits - model(x).numpy()).max() < 1e-4
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad = client.get(f"/v1/models/{version}/artifact?stream=photos&format=h5", headers=auth)
        assert bad.status_code == 422
        missing = client.get("/v1/models/9/artifact?stream=photos", headers=auth)
        assert missing.status_code == 404 and "no version 9" in missing.text


def test_the_cli_exports_and_refuses_clearly(service: Service, tmp_path: Path) -> None:
    version, _ = _write(service)
    out = tmp_path / "model.onnx"
    result = runner.invoke(
        cli, ["export", str(version), "--stream", "photos", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["path"] == str(out) and out.is_file() and answer["format"] == "onnx"
    assert onnx.load(io.BytesIO(out.read_bytes())).graph.input[0].name == "pixels"
    for args, message in [
        (["--stream", "nowhere"], "unknown stream 'nowhere'"),
        (["--stream", "photos", "--format", "h5"], "format: 'h5' is not one of"),
    ]:
        result = runner.invoke(cli, ["export", str(version), "--out", str(tmp_path), *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
