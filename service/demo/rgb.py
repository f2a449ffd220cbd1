"""The RGB demo (``learnstream run --demo rgb``): coloured shapes on photo backgrounds through
a torchvision model that the demo first writes to a weights file and then configures by path,
as a user with their own classifier would.

The weights stand for the user's production classifier: a torchvision ResNet-18 trained
(with Adam, in the library's own layout) on shapes the stream's first camera takes, before
learnstream sees the stream. learnstream then adapts its last block and head.

Two groups (``A`` and ``B``) share the shapes; from ``shift_window`` on, group ``B``'s camera
changes (another background); in ``corrupted_window`` group ``B``'s labels are permuted, a
labelling fault whose update the gate must reject.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.demo.shapes import CAMERAS, CLASSES, shapes
from service.demo.stream import GROUPS, DemoPlan
from service.ingest.images import encode_png
from service.streams.catalog import StreamSpec

ARCH = "torchvision:resnet18"
SIZE = 32
SHIFT = "background"
WEIGHTS_FILE = "demo-rgb-resnet18.safetensors"


PRETRAIN_IMAGES = 2000
PRETRAIN_EPOCHS = 10
MEAN, STD = 0.5, 0.25


def write_weights(folder: Path, seed: int = 0, epochs: int = PRETRAIN_EPOCHS) -> Path:
    """A torchvision ResNet-18 for the shapes' classes, trained on the first camera's shapes,
    saved as a user's weights file would be (``state_dict()`` with safetensors)."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = shapes(PRETRAIN_IMAGES, size=SIZE, seed=seed + 10_000)
    x = (torch.from_numpy(images).float() / 255 - MEAN) / STD
    y = torch.from_numpy(labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet18(num_classes=len(CLASSES))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y))
            for start in range(0, len(y), 64):
                batch = order[start : start + 64]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
    path = folder / WEIGHTS_FILE
    save_file(model.state_dict(), path)
    return path


def stream_spec(weights: Path) -> StreamSpec:
    """The demo stream's configuration: the shapes' classes, RGB at 32x32, the ResNet-18 from
    ``weights`` with the normalisation it was trained with, its last block and head learning
    at a fine-tuning rate."""
    return StreamSpec(
        classes=list(CLASSES),
        channels=3,
        size=SIZE,
        settings={
            "model_arch": ARCH,
            "model_weights": str(weights),
            "train_layers": "last-block",
            "input_mean": [MEAN] * 3,
            "input_std": [STD] * 3,
            "learning_rate": 0.01,
        },
    )


def _png(image: np.ndarray) -> str:
    return base64.b64encode(encode_png(torch.from_numpy(image))).decode()


def window_samples(plan: DemoPlan, window: int) -> list[dict[str, Any]]:
    """The samples of one window (1-based) of the RGB demo, in the ingest contract's shape."""
    shifted = window >= plan.shift_window
    n = plan.window_size
    seed = plan.seed * 1000 + window
    a_images, a_labels = shapes(n, size=SIZE, seed=seed)
    b_camera = CAMERAS[SHIFT] if shifted else CAMERAS["none"]
    b_images, b_labels = shapes(n, size=SIZE, seed=seed + 500, camera=b_camera)
    rng = np.random.default_rng([plan.seed, window])
    derangement = np.roll(np.arange(len(CLASSES)), 2)
    samples = []
    for k in range(n):
        group = GROUPS[int(rng.integers(len(GROUPS)))]
        image, label = (a_images[k], a_labels[k]) if group == "A" else (b_images[k], b_labels[k])
        if window == plan.corrupted_window and group == plan.corrupted_group:
            label = derangement[label]
        samples.append(
            {
                "id": f"rgb-{(window - 1) * n + k:06d}",
                "image": _png(image),
                "label": CLASSES[int(label)],
                "group": group,
                "meta": {"window": window},
            }
        )
    return samples


def rgb_stream(plan: DemoPlan) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Yield ``(window, samples)`` for every window of the plan."""
    for window in range(1, plan.windows + 1):
        yield window, window_samples(plan, window)
