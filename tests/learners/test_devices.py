"""LEARNSTREAM_DEVICE: which device a name means here, refused clearly when absent."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from learners.devices import DeviceUnavailable, mixed_precision, resolve_device


def test_names_resolve_to_the_devices_this_machine_has() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    with pytest.raises(DeviceUnavailable, match=r"cuda:99 asked for, but this machine has \d+"):
        resolve_device("cuda:99")
    with pytest.raises(DeviceUnavailable, match="not auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert isinstance(mixed_precision(torch.device("cpu")), nullcontext)
