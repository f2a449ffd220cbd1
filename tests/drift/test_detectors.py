import numpy as np
import pytest
from drift_samples import features

from drift.base import GroupedCovariateDetector
from drift.detectors import DETECTOR_CLASSES, UNKNOWN_DETECTOR, make_covariate_detector
from drift.mmd import MMDCovariateDetector
from drift.names import COVARIATE_DETECTORS


@pytest.mark.parametrize("name", ["lsdd", "ks"])
def test_quiet_on_exchangeable_draws(name: str) -> None:
    rng = np.random.default_rng(10)
    alarms = 0
    for trial in range(6):
        detector = make_covariate_detector(
            name, features(rng, 200), ["a", "b"] * 100, n_permutations=200, seed=trial
        )
        result = detector.test(features(rng, 100), ["a", "b"] * 50)
        assert result.detector == name and result.kind == "covariate"
        assert result.threshold == pytest.approx(0.01 / 3)
        assert set(result.per_group) == {"a", "b"}
        alarms += result.is_drift
    assert alarms <= 1


@pytest.mark.parametrize("name", ["lsdd", "ks"])
def test_clear_shift_is_found(name: str) -> None:
    rng = np.random.default_rng(11)
    detector = make_covariate_detector(
        name, features(rng, 200), ["a"] * 200, n_permutations=200, seed=0
    )
    result = detector.test(features(rng, 100, shift=1.5), ["a"] * 100)
    assert result.is_drift
    assert result.p_value < result.threshold
    assert result.drifted_groups == ["a"]


def test_registry_builds_every_detector_on_the_common_interface() -> None:
    rng = np.random.default_rng(17)
    assert tuple(DETECTOR_CLASSES) == COVARIATE_DETECTORS == ("mmd", "lsdd", "ks")
    assert DETECTOR_CLASSES["mmd"] is MMDCovariateDetector
    for name in COVARIATE_DETECTORS:
        detector = make_covariate_detector(
            name, features(rng, 60), ["a"] * 60, p_value=0.05, n_permutations=100, seed=1
        )
        assert isinstance(detector, GroupedCovariateDetector)
        assert detector.detector == name and detector.n_reference == 60


def test_unknown_detector_name_gives_the_exact_message() -> None:
    expected = "unknown covariate detector 'energy'; known detectors: 'mmd', 'lsdd', 'ks'"
    assert UNKNOWN_DETECTOR.format(name="energy") == expected
    with pytest.raises(ValueError) as info:
        make_covariate_detector("energy", np.zeros((4, 2)), ["a"] * 4)
    assert str(info.value) == expected
