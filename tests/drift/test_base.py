import numpy as np
import pytest

from drift.base import GroupedCovariateDetector, permutation_mask
from drift.mmd import MMDCovariateDetector
from drift.result import DriftResult


def test_mmd_results_unchanged_by_the_move_onto_the_common_interface() -> None:
    # Values recorded from MMDCovariateDetector before it moved onto GroupedCovariateDetector.
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 6)).astype(np.float32)
    detector = MMDCovariateDetector(
        ref, ["a"] * 150 + ["b"] * 120 + ["c"] * 30, n_permutations=300, min_group_size=25
    )
    groups = ["a"] * 40 + ["b"] * 60 + ["c"] * 20
    results = []
    for shift in (0.0, 0.3, 1.0):
        x = rng.normal(size=(120, 6)).astype(np.float32)
        x[:40, 0] += shift
        results.append(detector.test(x, groups))
    last = results[-1]
    assert [r.p_value for r in results] == pytest.approx([0.79667, 0.26667, 0.01333], abs=1e-4)
    assert last.statistic == pytest.approx(0.0072148, rel=1e-3)
    assert last.threshold == pytest.approx(0.01 / 3)
    assert last.per_group["a"].p_value == 0.0 and last.drifted_groups == ["a"]
    assert last.per_group["b"].p_value == pytest.approx(0.08333, abs=1e-4)
    assert last.per_group["c"].tested is False


class _MeanGap(GroupedCovariateDetector):
    """A toy backend: the gap of the first feature's means, with a fixed p-value."""

    detector = "mean_gap"

    def _configure(self, x_ref: np.ndarray) -> float:
        return float(x_ref[:, 0].mean())

    def _score(self, backend: float, x: np.ndarray) -> tuple[float, float]:
        gap = abs(float(x[:, 0].mean()) - backend)
        return gap, 0.0 if gap > 1.0 else 0.5


def test_a_new_backend_gets_groups_and_correction_from_the_base() -> None:
    ref = np.zeros((60, 2), dtype=np.float32)
    detector = _MeanGap(ref, ["a"] * 30 + ["b"] * 30, p_value=0.05)
    x = np.zeros((50, 2), dtype=np.float32)
    x[25:, 0] = 4.0
    result = detector.test(x, ["a"] * 25 + ["b"] * 25)
    assert isinstance(result, DriftResult) and result.detector == "mean_gap"
    assert result.threshold == pytest.approx(0.05 / 3)
    assert result.is_drift and result.drifted_groups == ["b"]
    assert result.p_value == 0.0  # overall gap 2.0


def test_permutation_mask_columns_pick_exactly_n_rows() -> None:
    mask = permutation_mask(50, 12, 5)
    assert mask.shape == (12, 50)
    assert set(mask.sum(dim=0).tolist()) == {5.0}
    assert len({tuple(c) for c in mask.T.tolist()}) > 1
