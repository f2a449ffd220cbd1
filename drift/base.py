"""The covariate-detector interface: one reference, many windows, per-group verdicts.

Every covariate detector is configured once per reference (the costly part: kernel
bandwidths, kernel centres, reference statistics) and then tests any number of
windows against it. A window is tested as a whole and, separately, each group with
at least ``min_group_size`` samples in both the reference and the window; the
significance level is Bonferroni-corrected for the number of tests run, so a shift
confined to one small group is found even when the overall mix hides it.

The statistical backend (alibi-detect today, under the Business Source License)
sits behind :class:`GroupedCovariateDetector`'s two hooks, ``_configure`` and
``_score``, so that it can be replaced without touching callers; the per-group
family and its correction are :func:`drift.bonferroni.grouped_test`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar, TypedDict, Unpack

import numpy as np
import torch

from drift.bonferroni import bonferroni_threshold, grouped_test
from drift.result import DriftResult

INSTALL_HINT = "alibi-detect with the torch backend is needed: pip install 'alibi-detect[torch]'"
LENGTHS_DIFFER = "x_ref and groups_ref must have the same length"
BAD_P_VALUE = "p_value must lie in (0, 1), got {p_value}"


def alibi_detector(name: str, x_ref: np.ndarray, **options: Any) -> Any:
    """alibi-detect's detector ``alibi_detect.cd.<name>`` on ``x_ref``, imported only now.

    Raises ImportError with :data:`INSTALL_HINT` when alibi-detect is not installed.
    """
    try:
        from alibi_detect import cd
    except ImportError as exc:  # pragma: no cover - guarded optional backend
        raise ImportError(INSTALL_HINT) from exc
    return getattr(cd, name)(x_ref, **options)


class DetectorOptions(TypedDict, total=False):
    """The keyword settings every grouped detector takes (see :class:`GroupedCovariateDetector`)."""

    p_value: float
    min_group_size: int
    feature_space: str
    overall_rows: np.ndarray | None


def mix_matched_rows(groups_ref: Sequence[str], groups_window: Sequence[str]) -> np.ndarray:
    """Rows of the reference whose group mix is the window's, as many as the groups allow,
    each group's first rows (a reference ordered newest first gives its newest).

    The overall test compares whole distributions, so a reference that holds a group at
    another share than the window would be a drift of the mix alone (a group whose
    reference begins at its latest shift is short of rows for a while).

    >>> mix_matched_rows(["a"] * 6 + ["b"] * 2, ["a", "b"] * 4).tolist()
    [0, 1, 6, 7]
    """
    ref, win = np.asarray(groups_ref), np.asarray(groups_window)
    names = [g for g in np.unique(win) if (ref == g).any()]
    if not names:
        return np.arange(len(ref))
    share = {g: float((win == g).sum()) for g in names}
    total = sum(share.values())
    scale = min((ref == g).sum() / (share[g] / total) for g in names)
    rows = [np.flatnonzero(ref == g)[: max(1, round(scale * share[g] / total))] for g in names]
    return np.sort(np.concatenate(rows))


class GroupedCovariateDetector(ABC):
    """Overall and per-group two-sample tests against a fixed reference, Bonferroni-corrected.

    Subclasses supply the test: ``_configure`` builds a backend from reference rows
    (once, at construction) and ``_score`` returns the statistic and p-value of a
    window against one such backend. A test with a random part overrides ``_seeded``
    so that both run under its seed and a window's result is reproducible.

    Parameters
    ----------
    x_ref
        Reference features ``(n, d)``: held-out samples, never training samples.
    groups_ref
        The group of each reference row.
    p_value
        Family-wise significance before the correction for the number of tests (a
        subclass may correct within its test too, as KS does over features).
    min_group_size
        Samples a group needs in both reference and window to be tested on its own.
    feature_space
        Name of the space the features live in, recorded in each result.
    overall_rows
        Rows of ``x_ref`` that make the overall test's reference (default: all); each
        group's test always uses all of that group's rows (see :func:`mix_matched_rows`).
    """

    detector: ClassVar[str] = "base"

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        p_value: float = 0.01,
        min_group_size: int = 20,
        feature_space: str = "penultimate",
        overall_rows: np.ndarray | None = None,
    ) -> None:
        if len(x_ref) != len(groups_ref):
            raise ValueError(LENGTHS_DIFFER)
        if len(x_ref) < 2:
            raise ValueError("the reference needs at least two samples")
        if not 0.0 < p_value < 1.0:
            raise ValueError(BAD_P_VALUE.format(p_value=p_value))
        self.p_value = p_value
        self.min_group_size = min_group_size
        self.feature_space = feature_space
        self._x_ref = np.asarray(x_ref, dtype=np.float32)
        self._groups_ref = np.asarray(groups_ref)
        overall = self._x_ref if overall_rows is None else self._x_ref[overall_rows]
        with self._seeded():
            self._overall = self._configure(overall)
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

    def _seeded(self) -> AbstractContextManager[None]:
        """The context configuring and scoring run in: none for a test with no random part."""
        return nullcontext()

    @property
    def n_reference(self) -> int:
        """Rows in the reference."""
        return len(self._x_ref)

    def test(self, x: np.ndarray, groups: Sequence[str]) -> DriftResult:
        """Test a window's features ``x`` (with the group of each row) against the reference."""
        started = time.perf_counter()
        x = np.asarray(x, dtype=np.float32)
        groups_arr = np.asarray(groups)

        def score(group: str | None) -> tuple[float, float]:
            if group is None:
                return self._score(self._overall, x)
            return self._score(self._by_group[group], x[groups_arr == group])

        with self._seeded():
            tested = grouped_test(
                self._groups_ref,
                groups_arr,
                score,
                p_value=self.p_value,
                min_group_size=self.min_group_size,
            )
        return DriftResult(
            kind="covariate",
            detector=self.detector,
            is_drift=tested.is_drift,
            statistic=tested.statistic,
            p_value=tested.p_value,
            threshold=tested.threshold,
            feature_space=self.feature_space,
            n_reference=self.n_reference,
            n_window=len(x),
            per_group=tested.per_group,
            seconds=time.perf_counter() - started,
        )


class PermutationCovariateDetector(GroupedCovariateDetector):
    """A grouped detector whose p-values come from a permutation test on alibi-detect's kernel.

    Subclasses name the alibi-detect detector (``backend``, built with ``backend_options``
    on the torch backend) and score a window with their own vectorised permutation test,
    whose p-value is :func:`permutation_p_value`. Its smallest value is
    ``1 / (n_permutations + 1)``, so the detector raises ``n_permutations`` until that is at
    most a quarter of the most corrected threshold it can meet (every configured group
    tested): otherwise a shift in one of many groups could never cross it.

    Parameters
    ----------
    n_permutations
        Permutations of each test, at least (see above).
    seed
        Seed of every random choice (permutations, kernel centres).
    **options
        Those of :class:`GroupedCovariateDetector`.
    """

    backend: ClassVar[str]
    backend_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        n_permutations: int = 500,
        seed: int = 0,
        **options: Unpack[DetectorOptions],
    ) -> None:
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
        self.n_permutations = n_permutations
        self.seed = seed
        super().__init__(x_ref, groups_ref, **options)
        self.n_permutations = max(
            n_permutations,
            permutations_for(bonferroni_threshold(self.p_value, 1 + len(self._by_group))),
        )

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        """Torch's global generator seeded with ``seed``, restored afterwards."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            yield

    def _configure(self, x_ref: np.ndarray) -> Any:
        return alibi_detector(
            self.backend,
            x_ref,
            backend="pytorch",
            p_val=self.p_value,
            n_permutations=self.n_permutations,
            device="cpu",
            **self.backend_options,
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


def permutation_p_value(statistic: float, permuted: torch.Tensor) -> float:
    """``(1 + b) / (B + 1)``, ``b`` of the ``B`` permuted statistics at least ``statistic``:
    the permutation p-value that is valid (never 0) with any number of permutations.

    >>> permutation_p_value(2.0, torch.tensor([0.5, 1.0, 3.0, 1.5]))
    0.4
    """
    return float((1 + int((permuted >= statistic).sum())) / (len(permuted) + 1))


def permutations_for(threshold: float, margin: float = 4.0) -> int:
    """Permutations whose smallest p-value, ``1 / (B + 1)``, is below ``threshold / margin``.

    >>> permutations_for(0.01 / 3)
    1200
    """
    return math.ceil(round(margin / threshold, 9))
