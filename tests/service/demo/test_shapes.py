"""The RGB shapes stream: seeded, balanced, and each camera shift changes the pictures."""

from __future__ import annotations

import numpy as np
import pytest

from service.demo.shapes import CAMERAS, CLASSES, shapes


def test_the_stream_is_seeded_and_balanced() -> None:
    x, y = shapes(60, size=32, seed=3)
    again, labels = shapes(60, size=32, seed=3)
    assert x.shape == (60, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x, again) and np.array_equal(y, labels)
    assert np.bincount(y, minlength=len(CLASSES)).tolist() == [10] * len(CLASSES)
    assert not np.array_equal(x, shapes(60, size=32, seed=4)[0])


@pytest.mark.parametrize("shift", [name for name in CAMERAS if name != "none"])
def test_every_camera_shift_changes_the_images(shift: str) -> None:
    plain, labels = shapes(12, size=32, seed=1)
    shifted, same_labels = shapes(12, size=32, seed=1, camera=CAMERAS[shift])
    assert np.array_equal(labels, same_labels)
    difference = np.abs(plain.astype(int) - shifted.astype(int)).mean()
    print(f"{shift}: mean absolute pixel change {difference:.1f}")
    assert difference > 3
