"""Which device a process trains and predicts on (``LEARNSTREAM_DEVICE``), and mixed precision.

``auto`` is the first CUDA device when torch sees one, else the CPU; ``cpu``; ``cuda`` or
``cuda:N``, refused with a clear message on a machine without that device. On CUDA, training
and inference run under bfloat16 autocast (no loss scaling needed); on the CPU nothing
changes, so results there stay bit-identical run to run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


class DeviceUnavailable(ValueError):
    """The configured device does not exist on this machine."""


def resolve_device(name: str) -> torch.device:
    """The torch device that the setting ``name`` (``auto``, ``cpu``, ``cuda[:N]``) means here."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(f"device: {name!r} is not auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceUnavailable(f"device: {name!r} is not auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise DeviceUnavailable(
                f"device: {name} asked for, but this machine has {count} CUDA device(s); "
                "use auto or cpu"
            )
        return torch.device("cuda", index)
    return device


def mixed_precision(device: torch.device) -> AbstractContextManager[object]:
    """bfloat16 autocast on CUDA; nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
