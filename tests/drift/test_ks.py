import numpy as np
import pytest
from drift_samples import features

from drift.ks import KSCovariateDetector


def test_ks_reports_the_bonferroni_corrected_min_p_and_the_max_statistic() -> None:
    rng = np.random.default_rng(15)
    ref, x = features(rng, 200), features(rng, 100, shift=0.5)
    detector = KSCovariateDetector(ref, ["a"] * 200)
    result = detector.test(x, ["a"] * 100)
    p_features, distances = detector._overall.score(x)
    assert result.p_value == pytest.approx(min(1.0, float(p_features.min()) * 6))
    assert result.statistic == pytest.approx(float(distances.max()))


def test_ks_agrees_with_alibi_detects_bonferroni_verdict() -> None:
    from alibi_detect.cd import KSDrift

    rng = np.random.default_rng(16)
    ref = features(rng, 200)
    # No group is big enough for a test of its own: one test, at alibi-detect's level.
    ours = KSCovariateDetector(ref, ["a"] * 200, min_group_size=10_000)
    alibi = KSDrift(ref, p_val=0.01, correction="bonferroni")
    for shift in (0.0, 0.2, 0.35, 0.6):
        x = features(rng, 100, shift=shift)
        result = ours.test(x, ["a"] * 100)
        assert result.threshold == pytest.approx(0.01)
        assert result.is_drift == bool(alibi.predict(x)["data"]["is_drift"])


def test_ks_takes_no_permutations_and_no_seed() -> None:
    ref = features(np.random.default_rng(19), 60)
    with pytest.raises(TypeError):
        KSCovariateDetector(ref, ["a"] * 60, n_permutations=100)
    with pytest.raises(TypeError):
        KSCovariateDetector(ref, ["a"] * 60, seed=1)
