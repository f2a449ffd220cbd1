"""Version 1 of a stream is the configured classifier, from the user's weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from helpers import make_settings
from safetensors.torch import save_file

from learners.architectures import LibraryClassifier
from service.context import Service
from service.demo.stream import DemoPlan, demo_stream
from service.ingest.samples import ingest
from service.models.export import export_version
from service.models.serving import predict_images
from service.pipeline.processor import process_pending
from service.queries.listings import list_alerts, status

ARCH = "torchvision:mobilenet_v3_small"
PLAN = DemoPlan(windows=2, window_size=64, bad_samples={})


def _play(service: Service) -> None:
    for _, samples in demo_stream(PLAN):
        ingest(service.store, service.settings, "demo", samples)
    process_pending(service, "demo")


def test_version_1_is_the_configured_model_from_its_weights(tmp_path: Path) -> None:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(5)
    pretrained = mobilenet_v3_small(num_classes=1000)
    weights = tmp_path / "mine.safetensors"
    save_file(pretrained.state_dict(), weights)
    settings = make_settings(
        tmp_path,
        model_arch=ARCH,
        model_weights=weights,
        input_channels=3,
        input_size=32,
        input_mean=[0.5, 0.5, 0.5],
        input_std=[0.25, 0.25, 0.25],
        bootstrap_epochs=2,
        min_bootstrap_accuracy=0.0,
    )
    service = Service.from_settings(settings)
    try:
        _play(service)
        assert status(service)["streams"]["demo"]["champion"] == 1
        loaded = service.registry.load("demo", 1)
        assert isinstance(loaded.model, LibraryClassifier)
        assert loaded.manifest["arch"]["name"] == ARCH
        assert loaded.manifest["arch"]["std"] == [0.25, 0.25, 0.25]
        # The backbone started from the file: its first convolution is far nearer the file's
        # than a fresh network's is, and training moved it.
        start = pretrained.features[0][0].weight
        trained = loaded.model.backbone.features[0][0].weight
        fresh = mobilenet_v3_small(num_classes=10).features[0][0].weight
        moved, apart = float((trained - start).norm()), float((fresh - start).norm())
        print(f"first conv: moved {moved:.3f} by training; a fresh network is {apart:.3f} away")
        assert 0 < moved < apart / 3
        image = next(iter(demo_stream(PLAN)))[1][0]["image"]
        assert predict_images(service, "demo", [image])["model_version"] == 1
        artifact = export_version(service, "demo", 1, "onnx", tmp_path / "v1.onnx")
        x = torch.rand(4, 3, 32, 32)
        session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"pixels": x.numpy()})
        with torch.no_grad():
            assert np.abs(logits - loaded.model(x).numpy()).max() < 1e-4
    finally:
        service.close()


def test_an_unknown_architecture_fails_version_1_with_one_message(tmp_path: Path) -> None:
    service = Service.from_settings(make_settings(tmp_path, model_arch="torchvision:resnet99"))
    try:
        _play(service)
        assert status(service)["streams"]["demo"]["champion"] is None
        failed = [a for a in list_alerts(service) if a["kind"] == "update.failed"]
        assert failed and all(
            "arch: unknown architecture 'torchvision:resnet99'" in a["message"] for a in failed
        )
    finally:
        service.close()
