"""Covariate detectors by name, so a setting can choose one.

Importing this module imports no backend: each detector imports alibi-detect only
when it is constructed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drift.base import GroupedCovariateDetector
from drift.ks import KSCovariateDetector
from drift.lsdd import LSDDCovariateDetector
from drift.mmd import MMDCovariateDetector

COVARIATE_DETECTORS: dict[str, type[GroupedCovariateDetector]] = {
    "mmd": MMDCovariateDetector,
    "lsdd": LSDDCovariateDetector,
    "ks": KSCovariateDetector,
}

UNKNOWN_DETECTOR = "unknown covariate detector {name!r}; known detectors: " + ", ".join(
    repr(name) for name in COVARIATE_DETECTORS
)


def make_covariate_detector(
    name: str, x_ref: np.ndarray, groups_ref: Sequence[str], **kwargs: Any
) -> GroupedCovariateDetector:
    """Configure the detector registered as ``name`` on a reference (the costly step).

    ``kwargs`` go to the detector's constructor: ``p_value``, ``n_permutations``,
    ``min_group_size``, ``seed``, ``feature_space``.

    >>> make_covariate_detector("energy", np.zeros((4, 2)), ["a"] * 4)
    Traceback (most recent call last):
    ...
    ValueError: unknown covariate detector 'energy'; known detectors: 'mmd', 'lsdd', 'ks'
    """
    try:
        cls = COVARIATE_DETECTORS[name]
    except KeyError:
        raise ValueError(UNKNOWN_DETECTOR.format(name=name)) from None
    return cls(x_ref, groups_ref, **kwargs)
