"""Reading a user's weights file without ever running code from it.

A weights file is a safetensors file, or a state dict saved with ``torch.save`` and read back
with ``torch.load(weights_only=True)``, which refuses any pickled object but tensors and plain
containers. Both give a flat mapping of parameter names to tensors.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor


class WeightsError(ValueError):
    """A weights file that cannot be read safely or does not hold a state dict."""


NOT_A_FILE = "weights: {path} is not a file"
UNSAFE = (
    "weights: {path} is neither a safetensors file nor a plain state dict: it holds pickled "
    "Python objects, which learnstream never loads; save model.state_dict() with "
    "safetensors.torch.save_file or torch.save"
)
UNREADABLE = (
    "weights: {path} is neither a safetensors file (name it .safetensors) nor a state dict "
    "saved with torch.save"
)
NOT_A_STATE_DICT = "weights: {path} holds {kind}, not a mapping of parameter names to tensors"


def read_weights(path: Path) -> dict[str, Tensor]:
    """The state dict in ``path``; any other content raises :class:`WeightsError`."""
    if not path.is_file():
        raise WeightsError(NOT_A_FILE.format(path=path))
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise WeightsError(
                f"weights: {path} is not a readable safetensors file: {error}"
            ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        raise WeightsError(UNSAFE.format(path=path)) from None
    except Exception:  # torch's unpickler fails in many ways on bytes that are no pickle
        raise WeightsError(UNREADABLE.format(path=path)) from None
    return _state_dict(path, loaded)


def _state_dict(path: Path, loaded: object) -> dict[str, Tensor]:
    """A plain state dict, also when saved as ``{"state_dict": ...}`` as trainers often do."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded:
        raise WeightsError(NOT_A_STATE_DICT.format(path=path, kind=type(loaded).__name__))
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        raise WeightsError(NOT_A_STATE_DICT.format(path=path, kind="other values"))
    return dict(loaded)
