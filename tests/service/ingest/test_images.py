import base64
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from service.errors import InvalidSample
from service.ingest.images import decode, encode_png, image_format, to_input


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_png_gray_decodes_to_chw_uint8() -> None:
    array = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).astype(np.uint8)
    image = decode(_png(array), max_pixels=10_000)
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8
    assert torch.equal(image[0], torch.from_numpy(array))


def test_jpeg_rgb_converts_to_gray_input_shape() -> None:
    rgb = np.zeros((40, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    image = to_input(decode(_jpeg(rgb), max_pixels=10_000), channels=1, size=28)
    assert image.shape == (1, 28, 28)
    assert 40 < int(image.float().mean()) < 80  # red weighs about 0.3 in luma


def test_npy_float_and_uint8() -> None:
    floats = np.full((5, 6), 0.5, dtype=np.float32)
    assert int(decode(_npy(floats), max_pixels=100)[0, 0, 0]) == 128
    rgb = np.full((5, 6, 3), 7, dtype=np.uint8)
    assert decode(_npy(rgb), max_pixels=100).shape == (3, 5, 6)


def test_npy_with_objects_is_never_unpickled() -> None:
    data = _npy(np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidSample, match="Python objects"):
        decode(data, max_pixels=100)


def test_npy_float_out_of_range() -> None:
    with pytest.raises(InvalidSample, match=r"float .npy values must lie in \[0, 1\]"):
        decode(_npy(np.full((4, 4), 3.0)), max_pixels=100)


def test_png_bomb_refused_from_header_before_decoding() -> None:
    # A header claiming 100000 x 100000 pixels; the body is never decoded.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(ihdr))
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )
    data = b"\x89PNG\r\n\x1a\n" + chunk
    with pytest.raises(InvalidSample, match="100000x100000 pixels exceed the limit of 4000000"):
        decode(data, max_pixels=4_000_000)


def test_unknown_format() -> None:
    with pytest.raises(InvalidSample, match=r"not a PNG, JPEG or \.npy file"):
        image_format(b"GIF89a")


def test_truncated_png_is_a_clear_error() -> None:
    data = _png(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(InvalidSample, match="PNG data cannot be decoded"):
        decode(data[:40], max_pixels=100)


def test_encode_png_round_trip() -> None:
    image = torch.randint(0, 255, (1, 9, 7), dtype=torch.uint8)
    assert torch.equal(decode(encode_png(image), max_pixels=100), image)
    assert base64.b64encode(encode_png(image))


def test_resizing_a_batch_equals_resizing_each_image() -> None:
    from service.ingest.images import resize_all

    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8, generator=gen) for _ in range(5)
    ]
    images += [torch.randint(0, 256, (1, 20, 24), dtype=torch.uint8, generator=gen)]
    images += [torch.zeros((1, 28, 28), dtype=torch.uint8)]  # already the size: unchanged
    together = resize_all(images, 28)
    one_by_one = [resize_all([image], 28)[0] for image in images]
    assert all(a.shape == (1, 28, 28) for a in together)
    assert all(torch.equal(a, b) for a, b in zip(together, one_by_one, strict=True))
    assert torch.equal(together[-1], images[-1])
