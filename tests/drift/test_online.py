from collections.abc import Iterator

import numpy as np
import pytest
import torch

from drift.online import (
    SHORT_REFERENCE,
    TOO_FEW_BOOTSTRAPS,
    UNKNOWN_ONLINE_METHOD,
    WRONG_ROWS,
    OnlineCovariateDetector,
    OnlineVerdict,
    min_bootstraps,
)

WINDOW = 10


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Configuring an online detector is thousands of small torch ops; with two threads on
    two shared cores each waits for a busy core (measured 15-70x slower), so use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(30).normal(size=(200, 4)).astype(np.float32)


@pytest.fixture(scope="module", params=["mmd", "lsdd"])
def detector(request: pytest.FixtureRequest, reference: np.ndarray) -> OnlineCovariateDetector:
    return OnlineCovariateDetector(
        reference, ert=1000, window_size=WINDOW, n_bootstraps=1200, method=request.param, seed=0
    )


def test_quiet_on_a_short_unshifted_stream(detector: OnlineCovariateDetector) -> None:
    detector.reset()
    stream = np.random.default_rng(31).normal(size=(40, 4)).astype(np.float32)
    verdicts = detector.update(stream)
    assert [v.time for v in verdicts] == list(range(1, 41))
    assert not any(v.is_drift for v in verdicts)


def test_alarm_soon_after_a_strong_shift(detector: OnlineCovariateDetector) -> None:
    rng = np.random.default_rng(32)
    detector.reset()
    detector.update(rng.normal(size=(WINDOW, 4)).astype(np.float32))
    shifted = rng.normal(loc=2.0, size=(3 * WINDOW, 4)).astype(np.float32)
    alarms = [v.time for v in detector.update(shifted) if v.is_drift]
    assert alarms and alarms[0] - WINDOW <= WINDOW


def test_single_instances_reset_and_verdict_shape(detector: OnlineCovariateDetector) -> None:
    detector.reset()
    (verdict,) = detector.update(np.zeros(4, dtype=np.float32))
    assert isinstance(verdict, OnlineVerdict)
    assert verdict.time == 1 and detector.time == 1
    assert verdict.is_drift == (verdict.test_stat > verdict.threshold)
    detector.reset()
    assert detector.time == 0
    with pytest.raises(ValueError) as info:
        detector.update(np.zeros((2, 3), dtype=np.float32))
    assert str(info.value) == WRONG_ROWS.format(n=4, shape=(2, 3))


def test_same_seed_same_thresholds(reference: np.ndarray) -> None:
    a = OnlineCovariateDetector(reference, ert=50, window_size=5, n_bootstraps=200, method="lsdd")
    b = OnlineCovariateDetector(reference, ert=50, window_size=5, n_bootstraps=200, method="lsdd")
    stream = np.random.default_rng(33).normal(size=(8, 4)).astype(np.float32)
    assert a.update(stream) == b.update(stream)


def test_bad_settings_are_refused(reference: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        OnlineCovariateDetector(reference, ert=50, window_size=5, method="cvm")  # type: ignore[arg-type]  # an unknown name
    assert str(info.value) == UNKNOWN_ONLINE_METHOD.format(name="cvm")
    with pytest.raises(ValueError) as info:
        OnlineCovariateDetector(reference, ert=50, window_size=100)
    assert str(info.value) == SHORT_REFERENCE.format(window_size=100, rows=200)
    needed = min_bootstraps(500, 10)
    with pytest.raises(ValueError) as info:
        OnlineCovariateDetector(reference, ert=500, window_size=10, n_bootstraps=100)
    assert str(info.value) == TOO_FEW_BOOTSTRAPS.format(
        n_bootstraps=100, ert=500, window_size=10, needed=needed
    )


def test_min_bootstraps_matches_what_alibi_detect_accepts(reference: np.ndarray) -> None:
    needed = min_bootstraps(50, 5)
    assert needed == 58
    OnlineCovariateDetector(reference, ert=50, window_size=5, n_bootstraps=needed)
    with pytest.raises(ValueError) as info:
        OnlineCovariateDetector(reference, ert=50, window_size=5, n_bootstraps=needed - 1)
    assert str(info.value) == TOO_FEW_BOOTSTRAPS.format(
        n_bootstraps=needed - 1, ert=50, window_size=5, needed=needed
    )
    from alibi_detect.cd import MMDDriftOnline

    with pytest.raises(ValueError, match="quantile should not be estimated"):
        MMDDriftOnline(reference, 50, 5, backend="pytorch", n_bootstraps=needed - 1, verbose=False)


def test_a_window_verdict_names_where_it_alarmed_and_resets(
    detector: OnlineCovariateDetector,
) -> None:
    rng = np.random.default_rng(33)
    detector.reset()
    quiet = detector.test_window(rng.normal(size=(30, 4)).astype(np.float32))
    assert not quiet.result.is_drift and quiet.alarms == []
    assert quiet.result.statistic <= quiet.result.threshold
    assert quiet.result.detector == f"{detector.method}_online" and quiet.result.n_window == 30
    shifted = rng.normal(loc=2.0, size=(3 * WINDOW, 4)).astype(np.float32)
    loud = detector.test_window(shifted)
    assert loud.result.is_drift and loud.result.p_value is None
    assert loud.alarms and loud.alarms[0] <= WINDOW
    assert loud.result.statistic > loud.result.threshold
    # Each alarm resets the run: the time after the window counts from the last alarm.
    assert detector.time == 3 * WINDOW - 1 - loud.alarms[-1]


def test_settings_refuse_too_few_online_bootstraps_at_start_up(tmp_path) -> None:
    from pydantic import ValidationError

    from service.config import ONLINE_NEEDS_METHOD, TOO_FEW_ONLINE_BOOTSTRAPS, Settings

    with pytest.raises(ValidationError) as info:
        Settings(home=tmp_path, drift_mode="online", drift_online_ert=5000)
    assert str(info.value.errors()[0]["ctx"]["error"]) == TOO_FEW_ONLINE_BOOTSTRAPS.format(
        n=3000, ert=5000, window=20, needed=min_bootstraps(5000, 20)
    )
    with pytest.raises(ValidationError) as info:
        Settings(home=tmp_path, drift_mode="online", drift_detector="ks")
    assert str(info.value.errors()[0]["ctx"]["error"]) == ONLINE_NEEDS_METHOD.format(name="ks")
    ok = Settings(home=tmp_path, drift_mode="online", drift_online_ert=1000)
    assert ok.drift_online_bootstraps >= min_bootstraps(1000, ok.drift_online_window)
