import numpy as np
import pytest
import torch
from drift_samples import features

from drift.lsdd import LSDDCovariateDetector


def test_lsdd_finds_a_shift_of_one_group_per_group() -> None:
    rng = np.random.default_rng(12)
    groups_ref = ["big"] * 360 + ["small"] * 40
    detector = LSDDCovariateDetector(features(rng, 400), groups_ref, n_permutations=300, seed=0)
    window = np.concatenate([features(rng, 180), features(rng, 40, shift=3.0)])
    result = detector.test(window, ["big"] * 180 + ["small"] * 40)
    assert result.is_drift
    assert "small" in result.drifted_groups
    assert result.per_group["big"].p_value > result.threshold


def test_lsdd_vectorised_permutations_agree_with_alibi_detect() -> None:
    rng = np.random.default_rng(13)
    detector = LSDDCovariateDetector(features(rng, 200), ["a"] * 200, n_permutations=400)
    for shift in (0.0, 0.4):
        x = features(rng, 100, shift=shift)
        ours = detector.test(x, ["a"] * 100)
        p_alibi, stat_alibi, _ = detector._overall.score(x)
        assert ours.statistic == pytest.approx(stat_alibi, rel=1e-3)
        assert abs(ours.p_value - p_alibi) < 0.08


def test_lsdd_is_reproducible_for_a_seed() -> None:
    rng = np.random.default_rng(14)
    ref, x = features(rng, 200), features(rng, 80, shift=0.3)
    first = LSDDCovariateDetector(ref, ["a"] * 200, n_permutations=100, seed=5).test(x, ["a"] * 80)
    again = LSDDCovariateDetector(ref, ["a"] * 200, n_permutations=100, seed=5).test(x, ["a"] * 80)
    assert (first.statistic, first.p_value) == (again.statistic, again.p_value)


def test_construction_leaves_the_global_torch_generator_alone() -> None:
    rng = np.random.default_rng(18)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    detector = LSDDCovariateDetector(features(rng, 100), ["a"] * 100, n_permutations=50)
    detector.test(features(rng, 50), ["a"] * 50)
    assert torch.equal(torch.rand(3), expected)
