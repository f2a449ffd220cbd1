"""Real images for tests: scikit-learn's digits, augmented; and encoders for every input format."""

from __future__ import annotations

import base64
import io
from functools import cache

import numpy as np
import torch

from service.demo import augment, digits, to_png_base64


@cache
def _digits(size: int) -> tuple[torch.Tensor, np.ndarray]:
    return digits(size)


def digit_samples(
    n: int,
    *,
    seed: int = 0,
    groups: tuple[str, ...] = ("A", "B"),
    rotate_group: str | None = None,
    rotation: float = 30.0,
    prefix: str = "s",
    size: int = 28,
) -> list[dict]:
    """``n`` ingest-contract samples drawn from the digits with fresh augmentation."""
    images, labels = _digits(size)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(labels), size=n, replace=n > len(labels))
    samples = []
    for k, base in enumerate(picks):
        group = groups[k % len(groups)]
        angle = rotation if group == rotate_group else 0.0
        samples.append(
            {
                "id": f"{prefix}-{seed}-{k}",
                "image": to_png_base64(augment(images[base], rng, angle)),
                "label": int(labels[base]),
                "group": group,
            }
        )
    return samples


def npy_base64(array: np.ndarray, allow_pickle: bool = False) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode()
