import numpy as np
import pytest

from drift.base import GroupedCovariateDetector, permutation_mask
from drift.mmd import MMDCovariateDetector
from drift.result import DriftResult


def test_mmd_results_recorded_with_permutations_sized_for_the_threshold() -> None:
    # The statistic is as recorded before the detector moved onto GroupedCovariateDetector;
    # p-values are (1 + b) / (B + 1), with B raised from 300 to 4 / (0.01 / 4) for three groups.
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 6)).astype(np.float32)
    detector = MMDCovariateDetector(
        ref, ["a"] * 150 + ["b"] * 120 + ["c"] * 30, n_permutations=300, min_group_size=25
    )
    assert detector.n_permutations == 1600
    groups = ["a"] * 40 + ["b"] * 60 + ["c"] * 20
    results = []
    for shift in (0.0, 0.3, 1.0):
        x = rng.normal(size=(120, 6)).astype(np.float32)
        x[:40, 0] += shift
        results.append(detector.test(x, groups))
    last = results[-1]
    assert [r.p_value for r in results] == pytest.approx([0.76640, 0.21799, 0.00937], abs=1e-4)
    assert last.statistic == pytest.approx(0.0072148, rel=1e-3)
    assert last.threshold == pytest.approx(0.01 / 3)
    # No permutation reached group a's statistic: the smallest p-value, never 0.
    assert last.per_group["a"].p_value == pytest.approx(1 / 1601) and last.drifted_groups == ["a"]
    assert last.per_group["b"].p_value == pytest.approx(0.11305, abs=1e-4)
    assert last.per_group["c"].tested is False


def test_a_permutation_p_value_is_never_zero() -> None:
    import torch

    from drift.base import permutation_p_value

    assert permutation_p_value(10.0, torch.zeros(499)) == pytest.approx(1 / 500)
    assert permutation_p_value(0.0, torch.ones(99)) == 1.0


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
