"""Covariate detectors by name, so a setting can choose one.

Importing this module imports no backend: each detector imports alibi-detect only
when it is constructed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import numpy as np

from drift.base import DetectorOptions, GroupedCovariateDetector, PermutationCovariateDetector
from drift.ks import KSCovariateDetector
from drift.lsdd import LSDDCovariateDetector
from drift.mmd import MMDCovariateDetector
from drift.names import COVARIATE_DETECTORS, unknown_message

# Keyed by the names of drift.names.COVARIATE_DETECTORS, in their order.
DETECTOR_CLASSES: dict[str, type[GroupedCovariateDetector]] = {
    "mmd": MMDCovariateDetector,
    "lsdd": LSDDCovariateDetector,
    "ks": KSCovariateDetector,
}

UNKNOWN_DETECTOR = unknown_message("covariate detector", COVARIATE_DETECTORS)


def make_covariate_detector(
    name: str,
    x_ref: np.ndarray,
    groups_ref: Sequence[str],
    *,
    n_permutations: int = 500,
    seed: int = 0,
    **options: Unpack[DetectorOptions],
) -> GroupedCovariateDetector:
    """Configure the detector registered as ``name`` on a reference (the costly step).

    ``options`` go to every detector (``p_value``, ``min_group_size``,
    ``feature_space``); ``n_permutations`` and ``seed`` only to those that draw
    permutations (KS has no random part), so one set of settings builds any of them.

    >>> make_covariate_detector("energy", np.zeros((4, 2)), ["a"] * 4)
    Traceback (most recent call last):
    ...
    ValueError: unknown covariate detector 'energy'; known detectors: 'mmd', 'lsdd', 'ks'
    """
    cls = DETECTOR_CLASSES.get(name)
    if cls is None:
        raise ValueError(UNKNOWN_DETECTOR.format(name=name))
    if issubclass(cls, PermutationCovariateDetector):
        return cls(x_ref, groups_ref, n_permutations=n_permutations, seed=seed, **options)
    return cls(x_ref, groups_ref, **options)
