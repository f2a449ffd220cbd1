"""SmallCNN shapes, seeded construction and pixel scaling."""

from __future__ import annotations

import pytest
import torch

from learners.models import TOO_SMALL, SmallCNN, build_model, to_float


@pytest.mark.parametrize(("input_size", "channels"), [(28, 1), (16, 1), (8, 3), (33, 3)])
def test_shapes(input_size: int, channels: int) -> None:
    model = SmallCNN(n_classes=7, in_channels=channels, input_size=input_size, hidden=32)
    x = torch.rand(5, channels, input_size, input_size)
    assert model(x).shape == (5, 7)
    assert model.features(x).shape == (5, 32)


def test_default_features_dim() -> None:
    assert SmallCNN().features(torch.rand(2, 1, 28, 28)).shape == (2, 64)


def test_too_small_input_rejected() -> None:
    with pytest.raises(ValueError) as info:
        SmallCNN(input_size=7)
    assert str(info.value) == TOO_SMALL.format(minimum=8, input_size=7)


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_model(n_classes=10, in_channels=1, input_size=16, seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    second = build_model(n_classes=10, in_channels=1, input_size=16, seed=4)
    other = build_model(n_classes=10, in_channels=1, input_size=16, seed=5)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_to_float() -> None:
    pixels = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    scaled = to_float(pixels)
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled, torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
    already = torch.rand(1, 1, 2, 2)
    assert to_float(already) is already
    with pytest.raises(TypeError):
        to_float(torch.zeros(1, 1, 2, 2, dtype=torch.int64))
