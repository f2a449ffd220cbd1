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

from collections.abc import Sequence
from typing import Any

import numpy as np

from drift.base import INSTALL_HINT, GroupedCovariateDetector


def _ks(x_ref: np.ndarray, p_value: float):  # type: ignore[no-untyped-def]
    try:
        from alibi_detect.cd import KSDrift
    except ImportError as exc:  # pragma: no cover - guarded optional backend
        raise ImportError(INSTALL_HINT) from exc
    return KSDrift(x_ref, p_val=p_value, correction="bonferroni")


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

    The result's ``p_value`` is the Bonferroni-corrected smallest feature p-value
    (see :func:`corrected_min_p`) and its ``statistic`` the largest KS distance.

    Parameters
    ----------
    x_ref
        Reference features ``(n, d)``: held-out samples, never training samples.
    groups_ref
        The group of each reference row.
    p_value
        Significance before the corrections for features and for the number of tests.
    n_permutations
        Unused (KS p-values are analytic); accepted so every registered detector
        can be built from the same settings.
    min_group_size
        Samples a group needs in both reference and window to be tested on its own.
    seed
        Unused by the test itself (it has no random part); kept for the common interface.
    feature_space
        Name of the feature space, recorded in each result.
    """

    detector = "ks"

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        p_value: float = 0.01,
        n_permutations: int | None = None,
        min_group_size: int = 20,
        seed: int = 0,
        feature_space: str = "penultimate",
    ) -> None:
        del n_permutations  # see the docstring: KS has no permutations
        super().__init__(
            x_ref,
            groups_ref,
            p_value=p_value,
            min_group_size=min_group_size,
            seed=seed,
            feature_space=feature_space,
        )

    def _configure(self, x_ref: np.ndarray) -> Any:
        return _ks(x_ref, self.p_value)

    def _score(self, backend: Any, x: np.ndarray) -> tuple[float, float]:
        p_values, distances = backend.score(x)
        return float(np.max(distances)), corrected_min_p(p_values)
