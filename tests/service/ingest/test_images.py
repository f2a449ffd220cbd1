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


def test_truncated_png_is_a_clear_error_in_our_words() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    data = _png(noise)  # noise does not compress: half the file is half the pixels
    with pytest.raises(InvalidSample) as truncated:
        decode(data[: len(data) // 2], max_pixels=100)
    assert str(truncated.value) == "image: PNG data cannot be decoded (truncated)"
    damaged = bytearray(data)
    damaged[data.index(b"IDAT") + 4] ^= 0xFF  # the compressed pixels' zlib header
    with pytest.raises(InvalidSample) as broken:
        decode(bytes(damaged), max_pixels=100)
    assert str(broken.value) == "image: PNG data cannot be decoded (damaged)"


def test_truncated_jpeg_is_a_clear_error_in_our_words() -> None:
    data = _jpeg(np.full((16, 16, 3), 90, dtype=np.uint8))
    with pytest.raises(InvalidSample) as truncated:
        decode(data[: len(data) // 2], max_pixels=1000)
    assert str(truncated.value) == "image: JPEG data cannot be decoded (truncated)"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a ``(H, W, C)`` uint16 array (Pillow cannot write 16-bit colour)."""
    height, width, channels = array.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_pngs_scale_to_8_bits(channels: int) -> None:
    array = np.full((2, 3, channels), 40_000, dtype=np.uint16)
    array[0, 0, : 3 if channels > 2 else 1] = 65_535  # the colour of the first pixel
    image = decode(_png16(array), max_pixels=100)
    assert image.dtype == torch.uint8 and image.shape[1:] == (2, 3)
    assert image[0].tolist() == [[255, 156, 156], [156, 156, 156]]  # 40000 / 257 = 155.6


def test_palette_png_decodes_to_its_colours() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:, :2] = (10, 200, 30)
    rgb[:, 2:] = (250, 0, 120)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(
        buffer, format="PNG"
    )
    image = decode(buffer.getvalue(), max_pixels=100)
    assert image.shape == (3, 4, 4)
    assert image[:, 0, 0].tolist() == [10, 200, 30] and image[:, 3, 3].tolist() == [250, 0, 120]


def test_grey_alpha_and_rgba_lose_their_alpha() -> None:
    grey_alpha = np.stack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)], axis=2)
    la = to_input(decode(_png(grey_alpha), max_pixels=100), channels=1, size=3)
    assert la.shape == (1, 3, 3) and int(la[0, 0, 0]) == 77
    rgba = np.full((3, 3, 4), 5, dtype=np.uint8)
    rgba[..., :3] = (0, 255, 0)
    assert to_input(decode(_png(rgba), max_pixels=100), channels=3, size=3)[:, 1, 1].tolist() == [
        0,
        255,
        0,
    ]


def test_one_bit_png_is_black_and_white() -> None:
    image = decode(_png(np.eye(3, dtype=bool)), max_pixels=100)
    assert image.shape == (1, 3, 3) and image[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


def _npy_header(header: str, body: bytes = b"\x00" * 64) -> bytes:
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("{'descr': '<u1', 'fortran_order': False, 'shape': (0, 4), }", "width or height is zero"),
        ("{'descr': '<u1', 'fortran_order': False, 'shape': (-1, 4), }", "has a negative side"),
        ("{'descr': '<u1', 'fortran_order': False, 'shape': (9, 9), }", "shorter than its header"),
        (
            "{'descr': [('/site-packages/a.py', '<u1')], 'fortran_order': False, 'shape': (2, 2)}",
            "dtype |V1 is not numeric",
        ),
        (
            "{'descr': '/x/site-packages/a.py', 'fortran_order': False, 'shape': (2, 2), }",
            ".npy header is unreadable",
        ),
        ("(" * 3000, ".npy header is unreadable"),
    ],
)
def test_odd_npy_headers_are_refused_in_our_words(header: str, reason: str) -> None:
    with pytest.raises(InvalidSample) as refused:
        decode(_npy_header(header), max_pixels=100)
    message = str(refused.value)
    assert message.startswith("image: ") and reason in message
    assert "site-packages" not in message and len(message) < 100


def test_huge_npy_shapes_are_refused_from_the_header() -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000, 3), }"
    with pytest.raises(InvalidSample, match="100000x100000 pixels exceed the limit of 4000000"):
        decode(_npy_header(header), max_pixels=4_000_000)


def test_an_error_nobody_foresaw_is_refused_in_our_words(monkeypatch, caplog) -> None:
    import service.ingest.images as images

    def broken(data: bytes) -> tuple[int, int]:
        raise MemoryError("/usr/lib/python3.11/site-packages/torchvision/decode_png.cpp:79")

    monkeypatch.setattr(images, "_png_size", broken)
    with caplog.at_level("WARNING"), pytest.raises(InvalidSample) as refused:
        decode(_png(np.zeros((4, 4), np.uint8)), max_pixels=100)
    assert str(refused.value) == "image: cannot be read"
    (record,) = [r for r in caplog.records if r.name == "service.ingest.images"]
    assert record.exc_info is not None and record.exc_info[0] is MemoryError


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


def test_a_png_row_with_an_unknown_filter_is_refused_not_a_crash() -> None:
    # torchvision 0.29.1's decoder died of a segmentation fault on this (found by test_fuzz).
    rows = b"\x07" + bytes(4) + (b"\x00" + bytes(4)) * 3  # filter type 7 does not exist
    header = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )
    with pytest.raises(InvalidSample) as refused:
        decode(data, max_pixels=100)
    assert str(refused.value) == "image: PNG data cannot be decoded (damaged)"
