"""A real RGB stream for demos, tests and benchmarks: coloured shapes on photo backgrounds.

Each image is a crop of one of the photos scikit-learn ships (``china.jpg``, ``flower.jpg``;
nothing is downloaded) with one shape drawn on it at a random place, size and colour; the
shape is the class. The shifts a camera causes are applied per image: another background
photo, a colour cast, blur, and JPEG compression.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "cross", "ring", "bar")
SHIFTS = ("none", "background", "colour_cast", "blur", "jpeg")


@dataclass(frozen=True)
class Camera:
    """How one batch of images is taken: which photos are backgrounds, and the shift."""

    photos: tuple[int, ...] = (0,)
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.0
    jpeg_quality: int | None = None


CAMERAS: dict[str, Camera] = {
    "none": Camera(),
    "background": Camera(photos=(1,)),
    "colour_cast": Camera(colour_cast=(1.25, 0.9, 0.6)),
    "blur": Camera(blur=1.5),
    "jpeg": Camera(jpeg_quality=8),
}


@cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(img, dtype=np.uint8) for img in load_sample_images().images)


def _background(rng: np.random.Generator, size: int, photo: int) -> Image.Image:
    pixels = _photos()[photo]
    crop = int(rng.integers(size * 2, size * 4))
    top = int(rng.integers(0, pixels.shape[0] - crop))
    left = int(rng.integers(0, pixels.shape[1] - crop))
    patch = Image.fromarray(pixels[top : top + crop, left : left + crop])
    return patch.resize((size, size), Image.Resampling.BILINEAR)


def _draw(image: Image.Image, shape: str, rng: np.random.Generator) -> None:
    size = image.size[0]
    radius = size * float(rng.uniform(0.18, 0.3))
    cx, cy = (float(rng.uniform(radius, size - radius)) for _ in range(2))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    width = max(2, int(radius / 3))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour
        )
    elif shape == "cross":
        pen.line([(cx - radius, cy - radius), (cx + radius, cy + radius)], fill=colour, width=width)
        pen.line([(cx - radius, cy + radius), (cx + radius, cy - radius)], fill=colour, width=width)
    elif shape == "ring":
        pen.ellipse(box, outline=colour, width=width)
    else:
        pen.rectangle((cx - radius, cy - radius / 4, cx + radius, cy + radius / 4), fill=colour)


def _take(image: Image.Image, camera: Camera) -> Image.Image:
    if camera.colour_cast != (1.0, 1.0, 1.0):
        pixels = np.asarray(image, dtype=np.float32) * np.array(camera.colour_cast)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if camera.blur:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    if camera.jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=camera.jpeg_quality)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def shapes(
    n: int, *, size: int = 64, seed: int = 0, camera: Camera = CAMERAS["none"]
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 3, size, size)`` as ``uint8`` and their class indices into
    :data:`CLASSES`, balanced over the classes in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        photo = camera.photos[int(rng.integers(len(camera.photos)))]
        image = _background(rng, size, photo)
        _draw(image, CLASSES[label], rng)
        images[i] = np.asarray(_take(image, camera), dtype=np.uint8).transpose(2, 0, 1)
    return images, labels.astype(np.int64)
