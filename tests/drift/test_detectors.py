import numpy as np
import pytest
import torch

from drift.base import CovariateDetector, GroupedCovariateDetector, bonferroni_threshold
from drift.detectors import COVARIATE_DETECTORS, UNKNOWN_DETECTOR, make_covariate_detector
from drift.ks import KSCovariateDetector
from drift.lsdd import LSDDCovariateDetector
from drift.mmd import MMDCovariateDetector


def _features(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += shift
    return x


@pytest.mark.parametrize("name", ["lsdd", "ks"])
def test_quiet_on_exchangeable_draws(name: str) -> None:
    rng = np.random.default_rng(10)
    alarms = 0
    for trial in range(6):
        detector = make_covariate_detector(
            name, _features(rng, 200), ["a", "b"] * 100, n_permutations=200, seed=trial
        )
        result = detector.test(_features(rng, 100), ["a", "b"] * 50)
        assert result.detector == name and result.kind == "covariate"
        assert result.threshold == pytest.approx(0.01 / 3)
        assert set(result.per_group) == {"a", "b"}
        alarms += result.is_drift
    assert alarms <= 1


@pytest.mark.parametrize("name", ["lsdd", "ks"])
def test_clear_shift_is_found(name: str) -> None:
    rng = np.random.default_rng(11)
    detector = make_covariate_detector(
        name, _features(rng, 200), ["a"] * 200, n_permutations=200, seed=0
    )
    result = detector.test(_features(rng, 100, shift=1.5), ["a"] * 100)
    assert result.is_drift
    assert result.p_value < result.threshold
    assert result.drifted_groups == ["a"]


def test_lsdd_finds_a_shift_of_one_group_per_group() -> None:
    rng = np.random.default_rng(12)
    groups_ref = ["big"] * 360 + ["small"] * 40
    detector = LSDDCovariateDetector(_features(rng, 400), groups_ref, n_permutations=300, seed=0)
    window = np.concatenate([_features(rng, 180), _features(rng, 40, shift=3.0)])
    result = detector.test(window, ["big"] * 180 + ["small"] * 40)
    assert result.is_drift
    assert "small" in result.drifted_groups
    assert result.per_group["big"].p_value > result.threshold


def test_lsdd_vectorised_permutations_agree_with_alibi_detect() -> None:
    rng = np.random.default_rng(13)
    detector = LSDDCovariateDetector(_features(rng, 200), ["a"] * 200, n_permutations=400)
    for shift in (0.0, 0.4):
        x = _features(rng, 100, shift=shift)
        ours = detector.test(x, ["a"] * 100)
        p_alibi, stat_alibi, _ = detector._overall.score(x)
        assert ours.statistic == pytest.approx(stat_alibi, rel=1e-3)
        assert abs(ours.p_value - p_alibi) < 0.08


def test_lsdd_is_reproducible_for_a_seed() -> None:
    rng = np.random.default_rng(14)
    ref, x = _features(rng, 200), _features(rng, 80, shift=0.3)
    first = LSDDCovariateDetector(ref, ["a"] * 200, n_permutations=100, seed=5).test(x, ["a"] * 80)
    again = LSDDCovariateDetector(ref, ["a"] * 200, n_permutations=100, seed=5).test(x, ["a"] * 80)
    assert (first.statistic, first.p_value) == (again.statistic, again.p_value)


def test_ks_reports_the_bonferroni_corrected_min_p_and_the_max_statistic() -> None:
    rng = np.random.default_rng(15)
    ref, x = _features(rng, 200), _features(rng, 100, shift=0.5)
    detector = KSCovariateDetector(ref, ["a"] * 200)
    result = detector.test(x, ["a"] * 100)
    p_features, distances = detector._overall.score(x)
    assert result.p_value == pytest.approx(min(1.0, float(p_features.min()) * 6))
    assert result.statistic == pytest.approx(float(distances.max()))


def test_ks_agrees_with_alibi_detects_bonferroni_verdict() -> None:
    from alibi_detect.cd import KSDrift

    rng = np.random.default_rng(16)
    ref = _features(rng, 200)
    # No group is big enough for a test of its own: one test, at alibi-detect's level.
    ours = KSCovariateDetector(ref, ["a"] * 200, min_group_size=10_000)
    alibi = KSDrift(ref, p_val=0.01, correction="bonferroni")
    for shift in (0.0, 0.2, 0.35, 0.6):
        x = _features(rng, 100, shift=shift)
        result = ours.test(x, ["a"] * 100)
        assert result.threshold == pytest.approx(0.01)
        assert result.is_drift == bool(alibi.predict(x)["data"]["is_drift"])


def test_registry_builds_every_detector_on_the_common_interface() -> None:
    rng = np.random.default_rng(17)
    assert list(COVARIATE_DETECTORS) == ["mmd", "lsdd", "ks"]
    assert COVARIATE_DETECTORS["mmd"] is MMDCovariateDetector
    for name in COVARIATE_DETECTORS:
        detector = make_covariate_detector(
            name, _features(rng, 60), ["a"] * 60, p_value=0.05, n_permutations=100, seed=1
        )
        assert isinstance(detector, GroupedCovariateDetector)
        assert isinstance(detector, CovariateDetector)
        assert detector.detector == name and detector.n_reference == 60


def test_unknown_detector_name_gives_the_exact_message() -> None:
    expected = "unknown covariate detector 'energy'; known detectors: 'mmd', 'lsdd', 'ks'"
    assert UNKNOWN_DETECTOR.format(name="energy") == expected
    with pytest.raises(ValueError) as info:
        make_covariate_detector("energy", np.zeros((4, 2)), ["a"] * 4)
    assert str(info.value) == expected


def test_construction_leaves_the_global_torch_generator_alone() -> None:
    rng = np.random.default_rng(18)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    detector = LSDDCovariateDetector(_features(rng, 100), ["a"] * 100, n_permutations=50)
    detector.test(_features(rng, 50), ["a"] * 50)
    assert torch.equal(torch.rand(3), expected)


def test_bonferroni_threshold() -> None:
    assert bonferroni_threshold(0.01, 3) == pytest.approx(0.01 / 3)
    assert bonferroni_threshold(0.01, 0) == 0.01
