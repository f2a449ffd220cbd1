"""Exporting a model version for production: safetensors, ONNX or TorchScript.

Every artifact takes float32 NCHW pixels in [0, 1] at the stream's input size and applies the
model's normalisation itself, and carries how to prepare its input as metadata under the keys
of :data:`METADATA_KEYS` (values as JSON): in the safetensors header, in the ONNX model's
``metadata_props``, or as the TorchScript archive's extra file ``learnstream.json``.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from learners.architectures import normalisation_of
from service.context import Service
from service.errors import InvalidRequest
from service.models.promotion import load_checked
from service.models.registry import LoadedVersion

FORMATS = ("safetensors", "onnx", "torchscript")
SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEYS = (
    "learnstream.input_size",
    "learnstream.channels",
    "learnstream.mean",
    "learnstream.std",
    "learnstream.classes",
    "learnstream.version",
    "learnstream.stream",
    "learnstream.arch",
)
UNKNOWN_FORMAT = "format: {fmt!r} is not one of " + ", ".join(FORMATS)
ONNX_OPSET = 17


@dataclass(frozen=True)
class Artifact:
    """An exported version: where it was written, in which format, and its metadata."""

    path: Path
    format: str
    stream: str
    version: int
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "stream": self.stream,
            "version": self.version,
            "metadata": self.metadata,
        }


def artifact_metadata(loaded: LoadedVersion) -> dict[str, str]:
    """The preprocessing an artifact of ``loaded`` needs, JSON-encoded per key."""
    arch = loaded.manifest["arch"]
    channels = int(arch["in_channels"])
    mean, std = normalisation_of(loaded.model, channels)
    values: dict[str, Any] = {
        "learnstream.input_size": [int(arch["input_size"])] * 2,
        "learnstream.channels": channels,
        "learnstream.mean": mean,
        "learnstream.std": std,
        "learnstream.classes": list(loaded.manifest["classes"]),
        "learnstream.version": loaded.version,
        "learnstream.stream": loaded.manifest["stream"],
        "learnstream.arch": arch.get("name", "small_cnn"),
    }
    return {k: json.dumps(v) for k, v in values.items()}


def export_version(service: Service, stream: str, version: int, fmt: str, out: Path) -> Artifact:
    """Write ``version`` of ``stream`` to ``out`` (a file, or a folder to name it in) in
    ``fmt``; the version's files are checked against their digests first."""
    if fmt not in FORMATS:
        raise InvalidRequest(UNKNOWN_FORMAT.format(fmt=fmt))
    loaded = load_checked(service, stream, version)
    if out.is_dir():
        out = out / f"{stream}-v{version:04d}{SUFFIXES[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = artifact_metadata(loaded)
    # Written beside the target and renamed, so a reader never sees half an artifact.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        _WRITERS[fmt](loaded, tmp, metadata)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Artifact(out, fmt, stream, version, metadata)


def _example(loaded: LoadedVersion) -> torch.Tensor:
    arch = loaded.manifest["arch"]
    size = int(arch["input_size"])
    return torch.rand(2, int(arch["in_channels"]), size, size)


def _safetensors(loaded: LoadedVersion, path: Path, metadata: dict[str, str]) -> None:
    state = {k: v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
    save_file(state, path, metadata=metadata)


def _onnx(loaded: LoadedVersion, path: Path, metadata: dict[str, str]) -> None:
    import onnx

    # The TorchScript-based exporter (dynamo=False): the dynamo exporter needs onnxscript,
    # which is not among the pins, and gives nothing more for these feed-forward classifiers.
    torch.onnx.export(
        loaded.model.eval(),
        (_example(loaded),),
        str(path),
        dynamo=False,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=ONNX_OPSET,
    )
    model = onnx.load(str(path))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _torchscript(loaded: LoadedVersion, path: Path, metadata: dict[str, str]) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(loaded.model.eval(), _example(loaded))
    torch.jit.save(traced, str(path), _extra_files={"learnstream.json": json.dumps(metadata)})


_WRITERS = {"safetensors": _safetensors, "onnx": _onnx, "torchscript": _torchscript}
