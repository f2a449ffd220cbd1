"""Decoding and conversion of incoming images, shared by ingest and prediction.

Images arrive as PNG, JPEG or ``.npy`` bytes. Sizes are read from the header
before any pixel is decoded (a decompression bomb is refused cheaply), ``.npy``
is read with ``allow_pickle=False``, and every image leaves as a ``uint8``
tensor of the stream's shape ``(channels, size, size)``. PNG and JPEG are decoded
by Pillow; whatever fails in a decoder becomes :class:`InvalidSample` in our words,
never the library's message (it can quote its own source paths).
"""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from service.errors import InvalidSample

log = logging.getLogger(__name__)

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


def _npy_header(data: bytes) -> tuple[tuple[int, ...], np.dtype]:
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        # numpy's public header readers are per version; this private one takes any.
        read_header = np.lib.format._read_array_header  # type: ignore[attr-defined]  # private
        shape, _fortran, dtype = read_header(buffer, version)
    except Exception as exc:  # numpy quotes the header back: keep it out of the reason
        raise InvalidSample("image: .npy header is unreadable") from exc
    return tuple(shape), dtype


def _check_npy_shape(shape: tuple[int, ...], max_pixels: int) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        text = str(shape) if len(str(shape)) <= 60 else f"of {len(shape)} dimensions"
        raise InvalidSample(f"image: .npy shape {text} is not (H, W) or (H, W, C)")
    if min(shape) < 0:
        raise InvalidSample("image: .npy shape has a negative side")
    if shape[0] == 0 or shape[1] == 0:
        raise InvalidSample("image: width or height is zero")
    if shape[0] * shape[1] > max_pixels:
        raise InvalidSample(f"image: {shape[0]}x{shape[1]} pixels exceed the limit of {max_pixels}")


def _decode_npy(data: bytes, max_pixels: int) -> torch.Tensor:
    shape, dtype = _npy_header(data)
    if dtype.hasobject:
        raise InvalidSample("image: .npy holds Python objects, which are never loaded")
    _check_npy_shape(shape, max_pixels)
    if dtype.kind not in "biuf":
        raise InvalidSample(f"image: .npy dtype {dtype.str} is not numeric")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InvalidSample("image: .npy data is shorter than its header says") from exc
    if array.shape != shape:
        raise InvalidSample("image: .npy data does not match its header")
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
    return _to_tensor(array.astype(np.uint8))


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """A ``uint8`` tensor ``(C, H, W)`` of an ``(H, W)`` or ``(H, W, C)`` array."""
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _pillow_pixels(image: Image.Image) -> np.ndarray:
    """The pixels of a decoded Pillow image as ``uint8``, grey, grey+alpha, RGB or RGBA."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG: scale to 8 bits
        wide = np.asarray(image).astype(np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "L" if image.mode == "1" else "RGB")
    return np.array(image, dtype=np.uint8)  # a copy: torch wants writable memory


def _decode_pillow(data: bytes, kind: str, max_pixels: int) -> torch.Tensor:
    name = kind.upper()
    try:
        with Image.open(io.BytesIO(data), formats=[name]) as image:
            # The header read here may name another size than ours (a JPEG with two frames).
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidSample(
                    f"image: {height}x{width} pixels exceed the limit of {max_pixels}"
                )
            image.load()
            pixels = _pillow_pixels(image)
    except InvalidSample:
        raise
    except EOFError as exc:
        raise InvalidSample(f"image: {name} data cannot be decoded (truncated)") from exc
    except Exception as exc:
        detail = "truncated" if "truncated" in str(exc).lower() else "damaged"
        raise InvalidSample(f"image: {name} data cannot be decoded ({detail})") from exc
    return _to_tensor(pixels)


def decode(data: bytes, *, max_pixels: int) -> torch.Tensor:
    """Decode PNG, JPEG or ``.npy`` bytes to a ``uint8`` tensor ``(C, H, W)``; raises
    :class:`InvalidSample` only, whatever went wrong (an unforeseen error is logged)."""
    try:
        return _decode(data, max_pixels)
    except InvalidSample:
        raise
    except Exception as exc:
        log.warning("an image could not be decoded", exc_info=True)
        raise InvalidSample("image: cannot be read") from exc


def _decode(data: bytes, max_pixels: int) -> torch.Tensor:
    kind = image_format(data)
    if kind == "npy":
        return _decode_npy(data, max_pixels)
    height, width = _png_size(data) if kind == "png" else _jpeg_size(data)
    if height == 0 or width == 0:
        raise InvalidSample("image: width or height is zero")
    if height * width > max_pixels:
        raise InvalidSample(f"image: {height}x{width} pixels exceed the limit of {max_pixels}")
    return _decode_pillow(data, kind, max_pixels)


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


def resize_each(images: list[torch.Tensor], size: int) -> list[torch.Tensor | None]:
    """:func:`resize_all`, where an image that cannot be resized becomes ``None`` (logged)
    rather than failing the others."""
    try:
        return list(resize_all(images, size))
    except Exception:
        log.warning("a batched resize failed; resizing one image at a time", exc_info=True)
    out: list[torch.Tensor | None] = []
    for image in images:
        try:
            out.append(resize_all([image], size)[0])
        except Exception:
            log.warning("an image of shape %s could not be resized", tuple(image.shape))
            out.append(None)
    return out


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a ``uint8`` tensor ``(C, H, W)``, for producers and tests."""
    from torchvision.io import encode_png as _encode

    return _encode(image.contiguous()).numpy().tobytes()
