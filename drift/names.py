"""The names of drift's detectors and feature spaces: the one list settings validate against.

Plain literals, no torch and no backend, so that :mod:`service.config` can import them
cheaply; the modules that implement each name check against the same lists.

>>> COVARIATE_DETECTORS, ONLINE_DETECTORS, CONCEPT_DETECTORS
(('mmd', 'lsdd', 'ks'), ('mmd', 'lsdd'), ('adwin', 'page_hinkley'))
>>> FEATURE_SPACES
('penultimate', 'encoder', 'properties')
"""

from __future__ import annotations

from typing import Literal, get_args

CovariateDetectorName = Literal["mmd", "lsdd", "ks"]
"""Window covariate tests (:mod:`drift.detectors`)."""

OnlineDetectorName = Literal["mmd", "lsdd"]
"""Covariate tests with an online variant (:mod:`drift.online`)."""

FeatureSpace = Literal["penultimate", "encoder", "properties"]
"""Where covariate drift is tested (:mod:`drift.features`, :mod:`drift.properties`)."""

PROPERTIES_DETECTOR: CovariateDetectorName = "ks"
"""The covariate test of the ``properties`` space, whatever ``drift_detector`` says: one KS test
per property, Bonferroni over them, so each verdict names the properties that moved."""

ConceptDetectorName = Literal["adwin", "page_hinkley"]
"""Detectors on the error stream (:mod:`drift.concept`)."""

COVARIATE_DETECTORS: tuple[str, ...] = get_args(CovariateDetectorName)
ONLINE_DETECTORS: tuple[str, ...] = get_args(OnlineDetectorName)
FEATURE_SPACES: tuple[str, ...] = get_args(FeatureSpace)
CONCEPT_DETECTORS: tuple[str, ...] = get_args(ConceptDetectorName)


def unknown_message(kind: str, names: tuple[str, ...]) -> str:
    """The message template for an unknown ``kind`` name, listing ``names``.

    >>> unknown_message("concept detector", CONCEPT_DETECTORS).format(name="cusum")
    "unknown concept detector 'cusum'; known detectors: 'adwin', 'page_hinkley'"
    """
    return f"unknown {kind} {{name!r}}; known detectors: " + ", ".join(map(repr, names))
