"""Streams as configured objects: created validated, shown whole, changed only where safe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import digit_samples, make_settings
from safetensors.torch import save_file

from service.context import Service
from service.ingest.samples import ingest
from service.store.schema import Stream
from service.streams.catalog import (
    StreamExists,
    StreamSpec,
    create_stream,
    describe_stream,
    list_streams,
    spec_from_form,
    update_stream,
)
from service.streams.configuration import (
    UNSAFE_WHY,
    StreamChangeRefused,
    StreamConfigInvalid,
    settings_for,
)

RGB = {"classes": ["cat", "dog", "bird"], "channels": 3, "size": 32}


def _row(service: Service, name: str) -> dict:
    with service.store.session() as session:
        stream = service.store.stream(session, name)
        return {"classes": stream.classes, "config": stream.config, "size": stream.size}


def test_a_stream_keeps_its_own_settings_and_the_rest_are_global(service: Service) -> None:
    spec = spec_from_form(
        {
            "classes": ["cat", "dog", "bird"],
            "input": {"channels": 3, "size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
            "strategy": {"name": "ewc", "params": {"ewc_lambda": 5.0}},
            "settings": {"window_size": 32, "gate_tolerance": 0.05},
        }
    )
    create_stream(service.store, service.settings, "pets", spec)
    shown = describe_stream(service.store, service.settings, "pets")
    assert shown["classes"] == ["cat", "dog", "bird"]
    assert shown["input"] == {
        "channels": 3,
        "size": 32,
        "resize": "stretch",
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    assert shown["strategy"] == {"name": "ewc", "params": {"ewc_lambda": 5.0}}
    assert shown["settings"]["window_size"] == 32
    # Not set by the stream: the global value.
    assert shown["settings"]["drift_p_value"] == service.settings.drift_p_value
    # What the spec set, and what cannot change later (fixed from the global settings).
    assert set(shown["set_by_stream"]) == {
        "gate_tolerance",
        "input_mean",
        "input_std",
        "strategy",
        "strategy_params",
        "window_size",
    } | set(UNSAFE_WHY)
    assert shown["model"]["arch"] == service.settings.model_arch
    assert json.loads(json.dumps(shown)) == shown  # one JSON object
    # A global default changed later moves what the stream did not fix, not what it did.
    later = service.settings.model_copy(update={"model_arch": "timm:resnet18", "seed": 3})
    moved = describe_stream(service.store, later, "pets")
    assert moved["model"]["arch"] == shown["model"]["arch"] and moved["settings"]["seed"] == 3
    # The form round-trips: what show prints creates the same stream again.
    again = {k: shown[k] for k in ("classes", "input", "model", "strategy", "settings")}
    create_stream(service.store, service.settings, "pets2", spec_from_form(again))
    shown2 = describe_stream(service.store, service.settings, "pets2")
    assert {
        k: v for k, v in shown2.items() if k not in ("name", "created_at", "set_by_stream")
    } == {k: v for k, v in shown.items() if k not in ("name", "created_at", "set_by_stream")}
    # Ingest honours the stream's window size: 32 samples close its first window.
    samples = [{**s, "label": ["cat", "dog", "bird"][s["label"] % 3]} for s in digit_samples(40)]
    result = ingest(service.store, service.settings, "pets", samples)
    assert len(result.accepted) == 40 and len(result.closed_windows) == 1
    assert [r["name"] for r in list_streams(service.store, service.settings)] == ["pets", "pets2"]


def test_an_auto_created_stream_follows_the_global_settings(service: Service) -> None:
    ingest(service.store, service.settings, "auto", digit_samples(8))
    with service.store.session() as session:
        stream = service.store.stream(session, "auto")
    assert stream.config is None
    assert settings_for(service.settings, stream) is service.settings


def _weights(tmp_path: Path, arch: str, n_classes: int, name: str) -> Path:
    import torchvision

    model = getattr(torchvision.models, arch)(num_classes=n_classes)
    path = tmp_path / name
    save_file(model.state_dict(), path)
    return path


def test_bad_configurations_get_one_message_naming_the_field(
    sqlite_service: Service, tmp_path: Path
) -> None:
    service = sqlite_service
    create_stream(service.store, service.settings, "kept", StreamSpec(**RGB))
    before = _row(service, "kept")
    evil = tmp_path / "evil.pt"
    torch.save({"run": os.system}, evil)
    mobilenet = _weights(tmp_path, "mobilenet_v3_small", 5, "mobilenet.safetensors")
    resnet = {"model_arch": "torchvision:resnet18"}
    cases = {
        "arch": {"model_arch": "torchvision:resnet99"},
        "weights": {**resnet, "model_weights": str(mobilenet)},
        "weights ": {**resnet, "model_weights": str(evil)},
        "weights  ": {**resnet, "model_weights": str(tmp_path / "missing.pt")},
        "window_size": {"window_size": 2},
        "strategy": {"strategy": "icarl"},
        "home": {"home": "/tmp"},
    }
    for field, values in cases.items():
        with pytest.raises(StreamConfigInvalid) as caught:
            create_stream(
                service.store, service.settings, "new", StreamSpec(**RGB, settings=values)
            )
        message = str(caught.value)
        print(f"{field.strip()}: {message}")
        assert message.startswith(field.strip()) and "\n" not in message
    with pytest.raises(StreamConfigInvalid, match=r"^classes: needs at least two distinct"):
        create_stream(service.store, service.settings, "new", StreamSpec(classes=["a", "a"]))
    with pytest.raises(StreamExists):
        create_stream(service.store, service.settings, "kept", StreamSpec(classes=["x", "y"]))
    with service.store.session() as session:
        assert session.query(Stream).count() == 1
    assert _row(service, "kept") == before


def test_weights_of_another_class_count_get_a_new_head(
    sqlite_service: Service, tmp_path: Path
) -> None:
    service = sqlite_service
    weights = _weights(tmp_path, "resnet18", 1000, "imagenet-like.safetensors")
    spec = StreamSpec(
        **RGB, settings={"model_arch": "torchvision:resnet18", "model_weights": str(weights)}
    )
    create_stream(service.store, service.settings, "transfer", spec)
    shown = describe_stream(service.store, service.settings, "transfer")
    assert shown["model"]["weights"] == str(weights.resolve())


def test_only_safe_changes_are_made(sqlite_service: Service) -> None:
    service = sqlite_service
    spec = StreamSpec(**RGB, settings={"strategy": "replay", "strategy_params": {"mem_size": 50}})
    create_stream(service.store, service.settings, "s", spec)
    change = update_stream(
        service.store, service.settings, "s", {"gate_tolerance": "0.04"}, add_classes=["fish"]
    )
    assert change.changed == {"gate_tolerance": 0.04} and change.added_classes == ["fish"]
    before = _row(service, "s")
    assert before["classes"] == ["cat", "dog", "bird", "fish"]
    refused = {
        "model_arch": ({"model_arch": "torchvision:resnet18"}, "architecture"),
        "strategy_params": ({"strategy_params": {"mem_size": 10}}, "mem_size"),
        "holdout_fraction": ({"holdout_fraction": 0.5}, "split"),
    }
    for field, (values, why) in refused.items():
        with pytest.raises(StreamChangeRefused) as caught:
            update_stream(service.store, service.settings, "s", values)
        print(caught.value)
        assert str(caught.value).startswith(f"{field}: cannot change") and why in str(caught.value)
        assert "learnstream streams create" in str(caught.value)
    for classes in (["dog", "cat", "bird", "fish"], ["cat", "dog", "bird"]):
        with pytest.raises(StreamChangeRefused, match="removing or reordering"):
            update_stream(service.store, service.settings, "s", {}, classes=classes)
    with pytest.raises(StreamConfigInvalid, match=r"^gate_tolerance"):
        update_stream(service.store, service.settings, "s", {"gate_tolerance": "much"})
    assert _row(service, "s") == before


def test_a_cached_stream_picks_up_a_change_made_elsewhere(sqlite_service: Service) -> None:
    """Another process adds a class: this one's cached row is read again, not trusted."""
    service = sqlite_service
    create_stream(service.store, service.settings, "s", StreamSpec(classes=["0", "1"]))
    first = ingest(service.store, service.settings, "s", [{**digit_samples(1)[0], "label": 1}])
    assert first.accepted
    other = Service.from_settings(make_settings(service.settings.home.parent))
    try:
        update_stream(other.store, other.settings, "s", {"window_size": 8}, add_classes=["2"])
    finally:
        other.close()
    assert "s" in service.store.streams  # still cached here
    samples = [{**s, "label": 2} for s in digit_samples(8, prefix="new")]
    result = ingest(service.store, service.settings, "s", samples)
    assert len(result.accepted) == 8, result.rejected
    assert result.closed_windows  # the new window size holds
