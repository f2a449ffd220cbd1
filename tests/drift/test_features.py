import numpy as np
import pytest
import torch

from drift.features import WRONG_IMAGES, UntrainedEncoder


def _images(n: int = 6, channels: int = 1, size: int = 28) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_same_seed_same_encoder_and_shape() -> None:
    x = _images()
    a = UntrainedEncoder(seed=7).encode(x)
    b = UntrainedEncoder(seed=7).encode(x.numpy())
    assert a.shape == (6, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_different_seeds_differ() -> None:
    x = _images()
    assert not np.allclose(UntrainedEncoder(seed=0).encode(x), UntrainedEncoder(seed=1).encode(x))


def test_enc_dim_channels_and_other_sizes() -> None:
    encoder = UntrainedEncoder(enc_dim=8, seed=0, in_channels=3)
    assert encoder.encode(_images(4, channels=3, size=32)).shape == (4, 8)
    assert encoder.encode(_images(0, channels=3)).shape == (0, 8)


def test_batches_do_not_change_the_encoding() -> None:
    x = _images(10)
    encoder = UntrainedEncoder(seed=2)
    np.testing.assert_allclose(encoder.encode(x, batch_size=3), encoder.encode(x), atol=1e-6)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        UntrainedEncoder().encode(torch.rand(2, 28, 28))
    assert str(info.value) == WRONG_IMAGES.format(channels=1, shape=(2, 28, 28))


def test_building_leaves_the_global_torch_generator_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    UntrainedEncoder(seed=9)
    assert torch.equal(torch.rand(2), expected)
