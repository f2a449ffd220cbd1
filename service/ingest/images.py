"""Decoding and conversion of incoming images, shared by ingest and prediction.

Images arrive as PNG, JPEG or ``.npy`` bytes. Sizes are read from the header
before any pixel is decoded (a decompression bomb is refused cheaply), ``.npy``
is read with ``allow_pickle=False``, and every image leaves as a ``uint8``
tensor of the stream's shape ``(channels, size, size)``.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from service.errors import InvalidSample

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_MAGIC = b"\x93NUMPY"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_format(data: bytes) -> str:
    """``png``, ``jpeg`` or ``npy`` from the magic bytes; raises :class:`InvalidSample`."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(NPY_MAGIC):
        return "npy"
    raise InvalidSample("image: not a PNG, JPEG or .npy file")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidSample("image: PNG header is truncated or damaged")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return height, width
        pos += 2 + length
    raise InvalidSample("image: JPEG has no frame header")


def _decode_npy(data: bytes, max_pixels: int) -> torch.Tensor:
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        # numpy's public header readers are per version; this private one takes any.
        read_header = np.lib.format._read_array_header  # type: ignore[attr-defined]  # private
        shape, _fortran, dtype = read_header(buffer, version)
    except (ValueError, OSError) as exc:
        raise InvalidSample(f"image: .npy header is unreadable ({exc})") from exc
    if dtype.hasobject:
        raise InvalidSample("image: .npy holds Python objects, which are never loaded")
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise InvalidSample(f"image: .npy shape {tuple(shape)} is not (H, W) or (H, W, C)")
    if shape[0] * shape[1] > max_pixels:
        raise InvalidSample(f"image: {shape[0]}x{shape[1]} pixels exceed the limit of {max_pixels}")
    if dtype.kind not in "biuf":
        raise InvalidSample(f"image: .npy dtype {dtype} is not numeric")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise InvalidSample(f"image: .npy data is unreadable ({exc})") from exc
    if not np.all(np.isfinite(array)):
        raise InvalidSample("image: .npy holds NaN or infinite values")
    if dtype.kind == "f":
        if array.min() < 0.0 or array.max() > 1.0:
            raise InvalidSample("image: float .npy values must lie in [0, 1]")
        array = np.rint(array * 255.0)
    elif dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    elif array.min() < 0 or array.max() > 255:
        raise InvalidSample("image: integer .npy values must lie in [0, 255]")
    array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def decode(data: bytes, *, max_pixels: int) -> torch.Tensor:
    """Decode PNG, JPEG or ``.npy`` bytes to a ``uint8`` tensor ``(C, H, W)``."""
    kind = image_format(data)
    if kind == "npy":
        return _decode_npy(data, max_pixels)
    height, width = _png_size(data) if kind == "png" else _jpeg_size(data)
    if height == 0 or width == 0:
        raise InvalidSample("image: width or height is zero")
    if height * width > max_pixels:
        raise InvalidSample(f"image: {height}x{width} pixels exceed the limit of {max_pixels}")
    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED
        )
    except RuntimeError as exc:
        raise InvalidSample(f"image: {kind.upper()} data cannot be decoded ({exc})") from exc
    if image.dtype != torch.uint8:
        # 16-bit PNGs decode to uint16: scale to 8 bits.
        image = (image.to(torch.float32) / 257.0).round().to(torch.uint8)
    return image


def to_input(image: torch.Tensor, *, channels: int, size: int) -> torch.Tensor:
    """Convert a ``uint8`` image ``(C, H, W)`` to the model's ``(channels, size, size)``."""
    return resize_all([convert_channels(image, channels)], size)[0]


def convert_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """The image with ``channels`` channels (alpha dropped, RGB to grey, grey to RGB)."""
    if image.shape[0] in (2, 4):  # drop the alpha channel
        image = image[: image.shape[0] - 1]
    if image.shape[0] == 3 and channels == 1:
        image = v2.functional.rgb_to_grayscale(image)
    elif image.shape[0] == 1 and channels == 3:
        image = image.expand(3, -1, -1)
    if image.shape[0] != channels:
        raise InvalidSample(f"image: {image.shape[0]} channels cannot become {channels}")
    return image


def resize_all(images: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Each image resized to ``size x size``: one resize call per distinct input shape, since
    a call per image costs about ten times more on a call of 64 (measured in ingest)."""
    out = list(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        if image.shape[1:] != (size, size):
            by_shape.setdefault(tuple(image.shape), []).append(i)
    for index in by_shape.values():
        stacked = torch.stack([images[i] for i in index])
        resized = v2.functional.resize(stacked, [size, size], antialias=True)
        for i, image in zip(index, resized, strict=True):
            out[i] = image
    return [image.contiguous() for image in out]


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a ``uint8`` tensor ``(C, H, W)``, for producers and tests."""
    from torchvision.io import encode_png as _encode

    return _encode(image.contiguous()).numpy().tobytes()
