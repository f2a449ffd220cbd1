"""Classifiers from the field's libraries by name: ``small_cnn``, ``torchvision:<name>`` (any
torchvision classification model) and ``timm:<name>`` (any timm model).

Nothing is ever downloaded: models are built with random weights, then take a user's state dict
(in the library's own layout, from a local file) when one is given. Each becomes a
:class:`~learners.models.Classifier`: the library's model without its last linear layer gives
the penultimate features; that layer is the head. When the weights' class count differs from the
stream's, the head is replaced by a fresh one (transfer learning from a trained backbone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from learners.classifier import SMALL_CNN, Classifier, SmallCNN
from learners.weights import read_weights


class ArchitectureError(ValueError):
    """An architecture that is unknown, or weights and inputs that do not fit it."""


UNKNOWN = (
    "arch: unknown architecture {name!r}; use small_cnn, torchvision:<model> "
    "(e.g. torchvision:resnet18) or timm:<model> (e.g. timm:mobilenetv3_small_050)"
)


class LibraryClassifier(Classifier):
    """A library model split into its backbone (normalised pixels to pre-logits) and a
    linear head; the normalisation is part of the model, so exports apply it too."""

    def __init__(
        self, backbone: nn.Module, head: nn.Linear, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = head
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def blocks(self) -> list[nn.Module]:
        return [b for b in self.backbone.children() if any(True for _ in b.parameters())]

    def features(self, x: Tensor) -> Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return torch.flatten(self.backbone((x - mean) / std), 1)


@dataclass(frozen=True)
class _Native:
    """A library model as the library builds it, and the dotted path of its last linear layer."""

    model: nn.Module
    head_path: str


def _last_linear(model: nn.Module, arch: str) -> str:
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ArchitectureError(f"arch: {arch} has no linear classifier layer to adapt")
    return linears[-1]


def _native(arch: str, n_classes: int, in_channels: int) -> _Native:
    library, _, name = arch.partition(":")
    if library == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ArchitectureError(UNKNOWN.format(name=arch))
        if in_channels != 3:
            raise ArchitectureError(f"channels: {arch} takes 3 channels, not {in_channels}")
        model = torchvision.models.get_model(name, weights=None, num_classes=n_classes)
        # torchvision has no one pre-logits call across its models (the head is ``fc``,
        # ``classifier[-1]`` or ``heads.head``): its last linear layer is the head.
        return _Native(model, _last_linear(model, arch))
    if library == "timm":
        import timm

        if not timm.is_model(name):
            raise ArchitectureError(UNKNOWN.format(name=arch))
        model = timm.create_model(
            name, pretrained=False, num_classes=n_classes, in_chans=in_channels
        )
        head = model.get_classifier()  # type: ignore[operator]
        path = next((p for p, m in model.named_modules() if m is head), "")
        if not isinstance(head, nn.Linear) or not path:
            raise ArchitectureError(f"arch: {arch}'s classifier is not one linear layer")
        return _Native(model, path)
    raise ArchitectureError(UNKNOWN.format(name=arch))


def _classes_in(weights: Mapping[str, Tensor], head_path: str, arch: str) -> int:
    key = f"{head_path}.weight"
    if key not in weights:
        raise ArchitectureError(
            f"weights: no {key!r} in the file, so it is not a {arch} state dict"
        )
    return int(weights[key].shape[0])


def _load(model: nn.Module, weights: Mapping[str, Tensor], arch: str) -> None:
    try:
        model.load_state_dict(dict(weights), strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:400]
        raise ArchitectureError(f"weights: the file does not fit {arch}: {detail}") from None


def _replace(model: nn.Module, path: str, layer: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, layer)


def build_classifier(
    arch: str,
    *,
    n_classes: int,
    in_channels: int,
    input_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: Mapping[str, Tensor] | Path | None = None,
) -> Classifier:
    """The classifier ``arch`` for ``n_classes``, with ``weights`` loaded when given (a file is
    read with :func:`~learners.weights.read_weights`), checked by one forward pass.

    Raises :class:`ArchitectureError` naming the field at fault.
    """
    state = read_weights(weights) if isinstance(weights, Path) else weights
    if arch == SMALL_CNN:
        model: Classifier = _small_cnn(n_classes, in_channels, input_size, state, mean, std)
    else:
        model = _library(arch, n_classes, in_channels, state, mean, std)
    _check_forward(model, arch, n_classes, in_channels, input_size)
    return model


def _normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[list[float], list[float]]:
    mean_, std_ = list(mean or [0.0] * channels), list(std or [1.0] * channels)
    if len(mean_) != channels or len(std_) != channels:
        raise ArchitectureError(f"mean, std: need {channels} values each (one per channel)")
    if min(std_) <= 0:
        raise ArchitectureError("std: every value must be positive")
    return mean_, std_


def _small_cnn(
    n_classes: int,
    in_channels: int,
    input_size: int,
    state: Mapping[str, Tensor] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Classifier:
    if _normalisation(mean, std, in_channels) != _normalisation(None, None, in_channels):
        raise ArchitectureError("mean, std: small_cnn takes pixels in [0, 1] as they are")
    n = n_classes if state is None else _classes_in(state, "classifier", SMALL_CNN)
    model = SmallCNN(n_classes=n, in_channels=in_channels, input_size=input_size)
    if state is not None:
        _load(model, state, SMALL_CNN)
    if n != n_classes:
        model.classifier = nn.Linear(model.classifier.in_features, n_classes)
    return model


def _library(
    arch: str,
    n_classes: int,
    in_channels: int,
    state: Mapping[str, Tensor] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Classifier:
    mean_, std_ = _normalisation(mean, std, in_channels)
    native = _native(arch, n_classes, in_channels)
    if state is not None:
        n = _classes_in(state, native.head_path, arch)
        if n != n_classes:
            native = _native(arch, n, in_channels)
        _load(native.model, state, arch)
    head = native.model.get_submodule(native.head_path)
    assert isinstance(head, nn.Linear)
    if head.out_features != n_classes:
        head = nn.Linear(head.in_features, n_classes)
    _replace(native.model, native.head_path, nn.Identity())
    return LibraryClassifier(native.model, head, mean_, std_)


def _check_forward(
    model: Classifier, arch: str, n_classes: int, in_channels: int, input_size: int
) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.rand(2, in_channels, input_size, input_size))
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise ArchitectureError(
            f"input_size: {arch} cannot take {in_channels}x{input_size}x{input_size} images: "
            f"{detail}"
        ) from None
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (2, n_classes):
        raise ArchitectureError(f"arch: {arch} gives logits of shape {tuple(logits.shape)}")


def normalisation_of(model: Classifier, channels: int) -> tuple[list[float], list[float]]:
    """The mean and std a model subtracts and divides by inside its forward pass."""
    if isinstance(model, LibraryClassifier):
        mean, std = model.get_buffer("mean"), model.get_buffer("std")
        return mean.flatten().tolist(), std.flatten().tolist()
    return _normalisation(None, None, channels)
