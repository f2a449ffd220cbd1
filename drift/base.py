"""The covariate-detector interface: one reference, many windows, per-group verdicts.

Every covariate detector is configured once per reference (the costly part: kernel
bandwidths, kernel centres, reference statistics) and then tests any number of
windows against it. A window is tested as a whole and, separately, each group with
at least ``min_group_size`` samples in both the reference and the window; the
significance level is Bonferroni-corrected for the number of tests run, so a shift
confined to one small group is found even when the overall mix hides it.

The statistical backend (alibi-detect today, under the Business Source License)
sits behind :class:`GroupedCovariateDetector`'s two hooks, ``_configure`` and
``_score``, so that it can be replaced without touching callers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from drift.result import DriftResult, GroupVerdict

INSTALL_HINT = "alibi-detect with the torch backend is needed: pip install 'alibi-detect[torch]'"
TOO_FEW = "too few samples"


@runtime_checkable
class CovariateDetector(Protocol):
    """What the service relies on: built once per reference, then ``test`` per window."""

    detector: str
    p_value: float
    min_group_size: int
    seed: int
    feature_space: str

    @property
    def n_reference(self) -> int: ...

    def test(self, x: np.ndarray, groups: Sequence[str]) -> DriftResult: ...


def bonferroni_threshold(p_value: float, n_tests: int) -> float:
    """The per-test level that keeps the family-wise error at ``p_value`` over ``n_tests`` tests.

    >>> bonferroni_threshold(0.01, 4)
    0.0025
    """
    return p_value / max(n_tests, 1)


class GroupedCovariateDetector(ABC):
    """Overall and per-group two-sample tests against a fixed reference, Bonferroni-corrected.

    Subclasses supply the test: ``_configure`` builds a backend from reference rows
    (once, at construction, under the seed) and ``_score`` returns the statistic and
    p-value of a window against one such backend (under the seed again, so a
    window's result is reproducible).

    Parameters
    ----------
    x_ref
        Reference features ``(n, d)``: held-out samples, never training samples.
    groups_ref
        The group of each reference row.
    p_value
        Family-wise significance before the correction for the number of tests.
    min_group_size
        Samples a group needs in both reference and window to be tested on its own.
    seed
        Seed of every random choice (permutations, kernel centres).
    feature_space
        Name of the space the features live in, recorded in each result.
    """

    detector: ClassVar[str] = "base"

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        p_value: float = 0.01,
        min_group_size: int = 20,
        seed: int = 0,
        feature_space: str = "penultimate",
    ) -> None:
        if len(x_ref) != len(groups_ref):
            raise ValueError("x_ref and groups_ref must have the same length")
        if len(x_ref) < 2:
            raise ValueError("the reference needs at least two samples")
        if not 0.0 < p_value < 1.0:
            raise ValueError(f"p_value must lie in (0, 1), got {p_value}")
        self.p_value = p_value
        self.min_group_size = min_group_size
        self.seed = seed
        self.feature_space = feature_space
        self._x_ref = np.asarray(x_ref, dtype=np.float32)
        self._groups_ref = np.asarray(groups_ref)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._overall = self._configure(self._x_ref)
            self._by_group = {
                str(g): self._configure(self._x_ref[self._groups_ref == g])
                for g in np.unique(self._groups_ref)
                if (self._groups_ref == g).sum() >= min_group_size
            }

    @abstractmethod
    def _configure(self, x_ref: np.ndarray) -> Any:
        """The backend detector for reference rows ``x_ref`` (called once per reference/group)."""

    @abstractmethod
    def _score(self, backend: Any, x: np.ndarray) -> tuple[float, float]:
        """The test statistic and p-value of window rows ``x`` against ``backend``."""

    @property
    def n_reference(self) -> int:
        """Rows in the reference."""
        return len(self._x_ref)

    def test(self, x: np.ndarray, groups: Sequence[str]) -> DriftResult:
        """Test a window's features ``x`` (with the group of each row) against the reference."""
        started = time.perf_counter()
        x = np.asarray(x, dtype=np.float32)
        groups_arr = np.asarray(groups)
        testable = [
            g
            for g in sorted(set(groups_arr.tolist()))
            if g in self._by_group and (groups_arr == g).sum() >= self.min_group_size
        ]
        threshold = bonferroni_threshold(self.p_value, 1 + len(testable))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            stat_all, p_all = self._score(self._overall, x)
            per_group: dict[str, GroupVerdict] = {}
            for g in sorted(set(groups_arr.tolist()) | set(self._groups_ref.tolist())):
                n_win = int((groups_arr == g).sum())
                n_ref = int((self._groups_ref == g).sum())
                if g not in testable:
                    per_group[g] = GroupVerdict(
                        False, None, None, n_ref, n_win, tested=False, note=TOO_FEW
                    )
                    continue
                stat_g, p_g = self._score(self._by_group[g], x[groups_arr == g])
                per_group[g] = GroupVerdict(
                    bool(p_g < threshold), float(stat_g), float(p_g), n_ref, n_win
                )
        is_drift = p_all < threshold or any(v.is_drift for v in per_group.values())
        return DriftResult(
            kind="covariate",
            detector=self.detector,
            is_drift=bool(is_drift),
            statistic=float(stat_all),
            p_value=float(p_all),
            threshold=threshold,
            feature_space=self.feature_space,
            n_reference=self.n_reference,
            n_window=len(x),
            per_group=per_group,
            seconds=time.perf_counter() - started,
        )


class PermutationCovariateDetector(GroupedCovariateDetector):
    """A grouped detector whose p-values come from a permutation test.

    Keep ``1 / n_permutations`` well below the corrected threshold, or the smallest
    attainable p-value cannot cross it.
    """

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        p_value: float = 0.01,
        n_permutations: int = 500,
        min_group_size: int = 20,
        seed: int = 0,
        feature_space: str = "penultimate",
    ) -> None:
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
        self.n_permutations = n_permutations
        super().__init__(
            x_ref,
            groups_ref,
            p_value=p_value,
            min_group_size=min_group_size,
            seed=seed,
            feature_space=feature_space,
        )


def permutation_mask(
    n_permutations: int, total: int, n_first: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A ``(total, n_permutations)`` 0/1 matrix; column j marks the rows permutation j puts first.

    Each column picks ``n_first`` of ``total`` rows uniformly at random (ranks of
    uniform draws), using torch's global generator so that callers can seed it.

    >>> _ = torch.manual_seed(0)
    >>> mask = permutation_mask(5, 10, 4)
    >>> tuple(mask.shape), mask.sum(dim=0).tolist()
    ((10, 5), [4.0, 4.0, 4.0, 4.0, 4.0])
    """
    ranks = torch.rand(n_permutations, total).argsort(dim=1).argsort(dim=1)
    return (ranks < n_first).to(dtype).T
