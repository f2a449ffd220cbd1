"""Covariate shift: alibi-detect's feature-wise Kolmogorov-Smirnov tests, Bonferroni over features.

One two-sample KS test per feature; a window drifts when any feature's p-value is
below ``p_value / n_features`` (alibi-detect's ``correction='bonferroni'``). We
report that as one corrected p-value, ``min(1, n_features * min p)``, so the
per-group correction of :class:`drift.base.GroupedCovariateDetector` applies on top
of it unchanged. KS needs no permutations and no kernel, so it is the cheapest
detector, but it sees only marginals: a shift that moves features jointly without
moving any one of them much goes unseen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drift.base import GroupedCovariateDetector, alibi_detector


def corrected_min_p(p_values: np.ndarray) -> float:
    """The Bonferroni-corrected smallest of ``p_values``: below ``alpha`` iff any is below alpha/n.

    >>> corrected_min_p(np.array([0.5, 0.001, 0.2, 0.9]))
    0.004
    >>> corrected_min_p(np.array([0.5, 0.3]))
    0.6
    >>> corrected_min_p(np.array([0.9, 0.8]))
    1.0
    """
    p = np.asarray(p_values, dtype=np.float64)
    return float(min(1.0, p.min() * p.size)) if p.size else 1.0


class KSCovariateDetector(GroupedCovariateDetector):
    """Feature-wise KS tests of a window's features against a fixed reference.

    Takes the parameters of :class:`drift.base.GroupedCovariateDetector`: no
    permutations and no seed, as KS p-values are analytic. The result's ``p_value`` is
    the Bonferroni-corrected smallest feature p-value (see :func:`corrected_min_p`)
    and its ``statistic`` the largest KS distance.
    """

    detector = "ks"

    def _configure(self, x_ref: np.ndarray) -> Any:
        return alibi_detector("KSDrift", x_ref, p_val=self.p_value, correction="bonferroni")

    def _score(self, backend: Any, x: np.ndarray) -> tuple[float, float]:
        p_values, distances = backend.score(x)
        return float(np.max(distances)), corrected_min_p(p_values)
