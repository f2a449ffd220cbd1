"""Classifiers by name from torchvision and timm, and a user's weights file loaded safely."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from learners.architectures import ArchitectureError, LibraryClassifier
from learners.models import SmallCNN, build_model
from learners.weights import WeightsError, read_weights

RGB = {"in_channels": 3, "input_size": 32, "seed": 0}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: models and weights come from local files only."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    ("arch", "features"),
    [
        ("torchvision:resnet18", 512),
        ("torchvision:mobilenet_v3_small", 1024),
        ("timm:resnet18", 512),
    ],
)
def test_library_models_by_name_give_features_and_a_head(arch: str, features: int) -> None:
    model = build_model(name=arch, n_classes=4, **RGB)
    x = torch.rand(3, 3, 32, 32)
    assert isinstance(model, LibraryClassifier)
    assert model.features(x).shape == (3, features)
    assert model(x).shape == (3, 4) and model.head.out_features == 4
    assert model.arch["name"] == arch and model.arch["mean"] == [0.0] * 3


def test_the_same_seed_builds_the_same_weights() -> None:
    one, two = (build_model(name="timm:resnet18", n_classes=4, **RGB) for _ in range(2))
    assert all(
        torch.equal(a, b)
        for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True)
    )


def test_normalisation_is_inside_the_model() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = build_model(name="torchvision:resnet18", n_classes=4, **RGB).eval()
    normalised = build_model(name="torchvision:resnet18", n_classes=4, mean=mean, std=std, **RGB)
    x = torch.rand(2, 3, 32, 32)
    expected = plain((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(normalised.eval()(x), expected, atol=1e-5)
    assert normalised.arch["std"] == pytest.approx(std)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_of_another_class_count_keep_the_backbone_and_replace_the_head(
    tmp_path: Path, suffix: str
) -> None:
    from torchvision.models import resnet18

    pretrained = resnet18(num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(pretrained.state_dict(), path)
    else:
        torch.save({"state_dict": pretrained.state_dict()}, path)
    model = build_model(name="torchvision:resnet18", n_classes=3, weights=path, **RGB)
    assert isinstance(model, LibraryClassifier)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, pretrained.layer4[1].conv2.weight)
    assert model.head.out_features == 3 and isinstance(model.backbone.fc, nn.Identity)


def test_weights_of_the_same_class_count_keep_the_head(tmp_path: Path) -> None:
    source = SmallCNN(n_classes=5)
    save_file(source.state_dict(), tmp_path / "small.safetensors")
    model = build_model(
        n_classes=5, in_channels=1, input_size=28, seed=3, weights=tmp_path / "small.safetensors"
    )
    assert torch.equal(model.head.weight, source.classifier.weight)


class _Payload:
    """Pickled, it would run ``Path.touch`` on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"^weights: .* pickled Python objects"):
        read_weights(path)
    with pytest.raises(WeightsError):
        build_model(name="torchvision:resnet18", n_classes=3, weights=path, **RGB)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "torchvision:resnet99"}, r"^arch: unknown architecture 'torchvision:resnet99'"),
        ({"name": "timm:no_such_net"}, r"^arch: unknown architecture"),
        ({"name": "keras:resnet"}, r"^arch: unknown architecture"),
        ({"name": "torchvision:resnet18", "in_channels": 1}, r"^channels: .* takes 3 channels"),
        ({"name": "torchvision:resnet18", "mean": [0.5]}, r"^mean, std: need 3 values"),
        ({"name": "torchvision:resnet18", "std": [1.0, 0.0, 1.0]}, r"^std: every value"),
        ({"name": "small_cnn", "input_size": 4}, r"input_size must be >= 8"),
    ],
)
def test_bad_configurations_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(**{"n_classes": 3, **RGB, **kwargs})  # type: ignore[arg-type]


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18(num_classes=3).state_dict(), path)
    with pytest.raises(ArchitectureError, match=r"^weights: no 'classifier.3.weight'"):
        build_model(name="torchvision:mobilenet_v3_small", n_classes=3, weights=path, **RGB)
    with pytest.raises(ArchitectureError, match=r"^weights: the file does not fit timm:resnet34"):
        build_model(name="timm:resnet34", n_classes=3, weights=path, **RGB)


def test_a_file_that_is_not_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.safetensors").write_text("not a tensor file")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"^weights: .* not a readable safetensors file"):
        read_weights(tmp_path / "notes.safetensors")
    with pytest.raises(WeightsError, match=r"^weights: .* holds list, not a mapping"):
        read_weights(tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"^weights: .* is not a file"):
        read_weights(tmp_path / "missing.pt")
