"""The RGB demo's stream: shapes in two groups, B's camera changed, B's labels corrupted once;
its weights file configures a stream as a user's would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import make_settings

from service.context import Service
from service.demo import rgb
from service.demo.shapes import CLASSES
from service.demo.stream import DemoPlan
from service.ingest.images import decode
from service.streams.catalog import create_stream, describe_stream

PLAN = DemoPlan(windows=10, window_size=200, shift_window=3, corrupted_window=4)


def _colour(samples: list[dict], group: str) -> np.ndarray:
    """The group's mean colour (R, G, B) over its images."""
    import base64

    images = [
        decode(base64.b64decode(s["image"]), max_pixels=10**6).float().mean(dim=(1, 2)).numpy()
        for s in samples
        if s["group"] == group
    ]
    return np.mean(images, axis=0)


def test_the_stream_shifts_group_b_and_corrupts_its_labels_once() -> None:
    before, shifted, corrupted = (rgb.window_samples(PLAN, w) for w in (2, 3, 4))
    assert all(s["label"] in CLASSES for s in before) and len(before) == 200
    assert {s["group"] for s in before} == {"A", "B"}
    assert rgb.window_samples(PLAN, 2) == before  # seeded
    # B's backgrounds change from the shift on; A's camera stays.
    change_b = float(np.linalg.norm(_colour(shifted, "B") - _colour(before, "B")))
    change_a = float(np.linalg.norm(_colour(shifted, "A") - _colour(before, "A")))
    print(f"mean colour change from window 2 to 3: B {change_b:.1f}, A {change_a:.1f}")
    assert change_b > 3 * change_a
    clean = rgb.window_samples(DemoPlan(windows=10, window_size=200, corrupted_window=9), 4)
    moved = [a["label"] != b["label"] for a, b in zip(corrupted, clean, strict=True)]
    groups = [s["group"] for s in clean]
    assert all(m == (g == "B") for m, g in zip(moved, groups, strict=True))


def test_its_weights_file_configures_a_stream(tmp_path: Path) -> None:
    service = Service.from_settings(make_settings(tmp_path))
    try:
        weights = rgb.write_weights(tmp_path / "weights", epochs=0)
        create_stream(service.store, service.settings, "rgb", rgb.stream_spec(weights))
        shown = describe_stream(service.store, service.settings, "rgb")
        assert shown["model"] == {
            "arch": rgb.ARCH,
            "weights": str(weights.resolve()),
            "train": "last-block",
            "feature_space": "penultimate",
        }
        assert shown["classes"] == list(CLASSES) and shown["input"]["size"] == rgb.SIZE
    finally:
        service.close()
