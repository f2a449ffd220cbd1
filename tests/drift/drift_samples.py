"""Feature rows for the drift tests: standard normal, the first feature shifted on request."""

from __future__ import annotations

import numpy as np


def features(rng: np.random.Generator, n: int, shift: float = 0.0, dim: int = 6) -> np.ndarray:
    """``n`` rows of ``dim`` standard normal features, ``shift`` added to the first."""
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] += shift
    return x
