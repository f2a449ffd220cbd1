"""The demo stream: scikit-learn's handwritten digits with a schedule of shifts per group.

Two groups (``A`` and ``B``) share the digits at random. Every image gets its
own small random affine change, so no two samples are identical even when a
base image comes round again. From ``shift_window`` on, group ``B``'s images
are rotated by ``rotation`` degrees (a covariate shift of one group); in
``corrupted_window`` group ``B``'s labels are permuted (a labelling fault whose
update the gate must reject).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from service.ingest.images import encode_png

GROUPS = ("A", "B")


@dataclass(frozen=True)
class DemoPlan:
    """The schedule of the demo stream; windows are numbered from 1.

    The shift comes right after version 1 (trained at window 2 on the default settings),
    so several windows of rotated ``B`` with true labels precede the corrupted one: a
    candidate that learns ``B``'s wrong labels loses on all of them, by far more than the
    gate's tolerance and chance (the margins ``learnstream run`` prints, for example group
    ``B`` -0.29 at p=1e-24 against a Holm level of 0.005), on any machine.
    """

    windows: int = 20
    window_size: int = 256
    shift_window: int = 3
    shift_group: str = "B"
    rotation: float = 30.0
    corrupted_window: int = 9
    corrupted_group: str = "B"
    input_size: int = 28
    seed: int = 7
    bad_samples: dict[int, int] = field(default_factory=lambda: {3: 3})

    @property
    def shift_windows(self) -> list[int]:
        return list(range(self.shift_window, self.windows + 1))

    @property
    def corrupted_windows(self) -> list[int]:
        return [self.corrupted_window] if self.corrupted_window <= self.windows else []


def digits(size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The 1,797 digits of scikit-learn (shipped with it) as float images ``(N, 1, size, size)``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = v2.functional.resize(images, [size, size], antialias=True).clamp(0.0, 1.0)
    return images, data.target.astype(np.int64)


def augment(image: torch.Tensor, rng: np.random.Generator, rotation: float = 0.0) -> torch.Tensor:
    """A small random affine change (plus a fixed ``rotation``) of one float image ``(1, H, W)``."""
    return v2.functional.affine(
        image,
        angle=float(rotation + rng.uniform(-8.0, 8.0)),
        translate=[float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5))],
        scale=float(rng.uniform(0.92, 1.08)),
        shear=[0.0, 0.0],
        interpolation=v2.InterpolationMode.BILINEAR,
    )


def to_png_base64(image: torch.Tensor) -> str:
    """Base64 PNG of a float image in [0, 1]."""
    pixels = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return base64.b64encode(encode_png(pixels)).decode()


def _bad_samples(count: int, window: int) -> list[dict[str, Any]]:
    """Deliberately broken samples, to show that ingest rejects them with reasons."""
    kinds = [
        {"image": "not base64!", "label": 1, "group": "A"},
        {"image": base64.b64encode(b"GIF89a....").decode(), "label": 1, "group": "A"},
        {"image": to_png_base64(torch.zeros(1, 8, 8)), "label": 42, "group": "A"},
        {"image": to_png_base64(torch.zeros(1, 8, 8)), "label": 1, "group": ""},
    ]
    return [dict(kinds[i % len(kinds)], id=f"bad-{window}-{i}") for i in range(count)]


def window_samples(
    plan: DemoPlan, window: int, images: torch.Tensor, labels: np.ndarray, order: np.ndarray
) -> list[dict[str, Any]]:
    """The samples of one window (1-based), in the ingest contract's shape."""
    rng = np.random.default_rng([plan.seed, window])
    derangement = np.roll(np.arange(10), 3)  # every class maps to another one
    samples = []
    for k in range(plan.window_size):
        position = (window - 1) * plan.window_size + k
        base = int(order[position % len(order)])
        group = GROUPS[int(rng.integers(len(GROUPS)))]
        rotated = group == plan.shift_group and window >= plan.shift_window
        image = augment(images[base], rng, plan.rotation if rotated else 0.0)
        label = int(labels[base])
        if window == plan.corrupted_window and group == plan.corrupted_group:
            label = int(derangement[label])
        samples.append(
            {
                "id": f"demo-{position:06d}",
                "image": to_png_base64(image),
                "label": label,
                "group": group,
                "meta": {"window": window, "base": base},
            }
        )
    bad = plan.bad_samples.get(window, 0)
    if bad:
        # Broken samples go in the middle of the window so they share calls with good ones.
        samples[len(samples) // 2 : len(samples) // 2] = _bad_samples(bad, window)
    return samples


def demo_stream(plan: DemoPlan) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Yield ``(window, samples)`` for every window of the plan."""
    images, labels = digits(plan.input_size)
    order = np.random.default_rng(plan.seed).permutation(len(labels))
    for window in range(1, plan.windows + 1):
        yield window, window_samples(plan, window, images, labels, order)
