"""Shared tiny data for the learners tests: sklearn's digits, upscaled to 16x16 uint8 images."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from sklearn.datasets import load_digits

from learners.models import SmallCNN, build_model

SIZE = 16
PER_EXPERIENCE = 300


@dataclass(frozen=True)
class Split:
    """One experience's worth of samples: images, labels and their sample ids."""

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=SIZE, mode="bilinear")
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels, torch.tensor(digits.target, dtype=torch.int64)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: one thread is as fast, and much faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return _digits()


@pytest.fixture(scope="session")
def exp_a(digits) -> Split:
    x, y = digits
    part = slice(0, PER_EXPERIENCE)
    return Split(x[part], y[part], [f"a{i}" for i in range(PER_EXPERIENCE)])


@pytest.fixture(scope="session")
def exp_b(digits) -> Split:
    x, y = digits
    part = slice(PER_EXPERIENCE, 2 * PER_EXPERIENCE)
    return Split(x[part], y[part], [f"b{i}" for i in range(PER_EXPERIENCE)])


@pytest.fixture()
def model() -> SmallCNN:
    return build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=0)
