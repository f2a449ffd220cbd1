import numpy as np
import pytest

from drift.concept import CONCEPT_DETECTORS, UNKNOWN_CONCEPT_DETECTOR, concept_drift


def test_page_hinkley_finds_an_error_increase_in_one_group_only() -> None:
    rng = np.random.default_rng(20)
    history = {"a": list(rng.random(500) < 0.1), "b": list(rng.random(500) < 0.1)}
    current = {"a": list(rng.random(128) < 0.1), "b": list(rng.random(128) < 0.8)}
    result = concept_drift(history, current, detector="page_hinkley")
    assert result.detector == "page_hinkley"
    assert result.drifted_groups == ["b"]
    assert result.per_group["b"].statistic > 0.5
    assert result.threshold == 50.0


def test_page_hinkley_improvement_is_not_an_alarm() -> None:
    rng = np.random.default_rng(21)
    history = {"a": list(rng.random(500) < 0.7)}
    result = concept_drift(history, {"a": list(rng.random(200) < 0.05)}, detector="page_hinkley")
    assert not result.is_drift


def test_page_hinkley_quiet_on_an_unchanged_error_rate() -> None:
    rng = np.random.default_rng(22)
    alarms = sum(
        concept_drift(
            {"a": list(rng.random(500) < 0.3)},
            {"a": list(rng.random(128) < 0.3)},
            detector="page_hinkley",
        ).is_drift
        for _ in range(20)
    )
    assert alarms == 0


def test_page_hinkley_threshold_sets_the_sensitivity() -> None:
    rng = np.random.default_rng(23)
    history = {"a": list(rng.random(1000) < 0.1)}
    current = {"a": list(rng.random(128) < 0.35)}
    assert not concept_drift(history, current, detector="page_hinkley").is_drift
    assert concept_drift(history, current, detector="page_hinkley", ph_threshold=15.0).is_drift


def test_adwin_stays_the_default() -> None:
    result = concept_drift({"a": [False] * 400}, {"a": [True] * 100})
    assert result.detector == "adwin" and result.threshold == 0.002


def test_unknown_concept_detector() -> None:
    assert CONCEPT_DETECTORS == ("adwin", "page_hinkley")
    with pytest.raises(ValueError) as info:
        concept_drift({}, {"a": [True]}, detector="kswin")  # type: ignore[arg-type]  # unknown name
    assert str(info.value) == UNKNOWN_CONCEPT_DETECTOR.format(name="kswin")


def test_concept_drift_in_one_group_only() -> None:
    rng = np.random.default_rng(2)
    history = {"a": list(rng.random(500) < 0.1), "b": list(rng.random(500) < 0.1)}
    current = {"a": list(rng.random(128) < 0.1), "b": list(rng.random(128) < 0.8)}
    result = concept_drift(history, current)
    assert result.drifted_groups == ["b"]
    assert result.per_group["b"].statistic > 0.5


def test_concept_improvement_is_not_an_alarm() -> None:
    rng = np.random.default_rng(3)
    result = concept_drift({"a": list(rng.random(500) < 0.7)}, {"a": list(rng.random(200) < 0.05)})
    assert not result.is_drift


def test_adwin_is_corrected_across_the_groups_tested() -> None:
    quiet = {g: [False, True] * 100 for g in "abcdefghij"}
    now = {g: [False, True] * 32 for g in "abcdefghij"}
    result = concept_drift(quiet, now, delta=0.002)
    one = concept_drift({"a": quiet["a"]}, {"a": now["a"]}, delta=0.002)
    assert result.threshold == 0.002 / 10 and one.threshold == 0.002
    assert not result.is_drift
