import numpy as np
import pytest
from drift_samples import features

from drift.base import BAD_P_VALUE, LENGTHS_DIFFER
from drift.mmd import MMDCovariateDetector


def _features(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return features(rng, n, shift, dim=8)


def test_no_drift_on_exchangeable_draws() -> None:
    rng = np.random.default_rng(0)
    alarms = 0
    for trial in range(10):
        ref = _features(rng, 200)
        detector = MMDCovariateDetector(ref, ["a", "b"] * 100, n_permutations=200, seed=trial)
        result = detector.test(_features(rng, 100), ["a", "b"] * 50)
        alarms += result.is_drift
        assert result.kind == "covariate" and result.detector == "mmd"
        assert result.threshold == pytest.approx(0.01 / 3)
    assert alarms <= 1


def test_shift_of_one_group_is_found_per_group() -> None:
    rng = np.random.default_rng(1)
    ref = _features(rng, 400)
    groups_ref = ["big"] * 360 + ["small"] * 40
    detector = MMDCovariateDetector(ref, groups_ref, n_permutations=300, seed=0)
    window = np.concatenate([_features(rng, 180), _features(rng, 40, shift=3.0)])
    result = detector.test(window, ["big"] * 180 + ["small"] * 40)
    assert result.is_drift
    assert result.drifted_groups == ["small"]
    assert result.per_group["small"].p_value < result.threshold
    assert result.per_group["big"].p_value > result.threshold


def test_group_too_small_is_reported_not_tested() -> None:
    rng = np.random.default_rng(2)
    detector = MMDCovariateDetector(_features(rng, 100), ["a"] * 95 + ["b"] * 5, seed=0)
    result = detector.test(_features(rng, 60), ["a"] * 60)
    assert result.per_group["b"].tested is False
    assert result.per_group["b"].note == "too few samples"


def test_reference_validation() -> None:
    with pytest.raises(ValueError) as info:
        MMDCovariateDetector(np.zeros((3, 2)), ["a"])
    assert str(info.value) == LENGTHS_DIFFER
    with pytest.raises(ValueError) as info:
        MMDCovariateDetector(np.zeros((3, 2)), ["a"] * 3, p_value=2.0)
    assert str(info.value) == BAD_P_VALUE.format(p_value=2.0)


def test_vectorised_permutations_agree_with_alibi_detect() -> None:
    rng = np.random.default_rng(4)
    ref = _features(rng, 120)
    detector = MMDCovariateDetector(ref, ["a"] * 120, n_permutations=400, seed=0)
    for shift in (0.0, 0.4):
        x = _features(rng, 80, shift=shift)
        ours = detector.test(x, ["a"] * 80)
        p_alibi, stat_alibi, _ = detector._overall.score(x)
        assert ours.statistic == pytest.approx(stat_alibi, rel=1e-4)
        assert abs(ours.p_value - p_alibi) < 0.08
