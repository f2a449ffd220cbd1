"""Online covariate drift: alibi-detect's MMD or LSDD online detectors, one instance at a time.

A window test (:mod:`drift.base`) waits for a window to fill; an online detector
scores a sliding window of the last ``window_size`` instances after every arrival
and alarms as soon as the statistic crosses a time-dependent threshold. The
thresholds are set, once per reference, by bootstrapping the reference so that
without drift the expected time to a false alarm is ``ert`` instances (alibi-detect
counts the run time from t=0). Setting them is expensive: ``n_bootstraps``
resamples of the reference for each of ``window_size`` steps, seconds on a CPU
(3-4 s for MMD or LSDD at ``ert=1000``, ``n_bootstraps=3000``, ``window_size=20``,
512 x 32 reference, on an idle core; several times that on a busy machine), so
configure a detector once per reference, keep it, and
:meth:`OnlineCovariateDetector.reset` it after an alarm rather than building a new
one. ``n_bootstraps`` should be an order of magnitude above ``ert`` for the
thresholds to hit the ERT.

The configuration is thousands of small torch operations: with two intra-op threads
on two cores shared with other work, each one waits for a busy core and the whole
can take 15-70 times longer (measured); a process that configures online detectors
on a shared machine should run torch on one thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from drift.base import alibi_detector
from drift.bootstraps import min_bootstraps
from drift.names import ONLINE_DETECTORS, OnlineDetectorName, unknown_message
from drift.result import DriftResult

UNKNOWN_ONLINE_METHOD = unknown_message("online detector", ONLINE_DETECTORS)
SHORT_REFERENCE = (
    "need 2 <= window_size and more than 2 * window_size reference rows, "
    "got window_size={window_size} and {rows} rows"
)
TOO_FEW_BOOTSTRAPS = (
    "n_bootstraps={n_bootstraps} is too few for ert={ert} and window_size={window_size}: "
    "need at least {needed}, ideally 10 * ert"
)
WRONG_ROWS = "expected ({n},) or (m, {n}), got {shape}"


@dataclass(frozen=True)
class OnlineVerdict:
    """The detector's verdict after one instance.

    ``time`` counts instances since the last reset (the first instance is 1);
    ``is_drift`` is ``test_stat > threshold``.
    """

    is_drift: bool
    test_stat: float
    threshold: float
    time: int


@dataclass(frozen=True)
class WindowAlarms:
    """An online detector's verdict on one window and the indices in it where it alarmed."""

    result: DriftResult
    alarms: list[int] = field(default_factory=list)


class OnlineCovariateDetector:
    """Sliding-window online drift detection of feature vectors against a fixed reference.

    Parameters
    ----------
    x_ref
        Reference features ``(n, d)``; ``n`` must exceed ``2 * window_size`` (alibi-detect
        splits it into a sub-reference and an extended test window).
    ert
        Expected run time: the mean number of instances to a false alarm without drift.
    window_size
        Instances in the sliding test window: small windows react fast to strong
        shifts, large ones find weak shifts.
    n_bootstraps
        Resamples used to set the thresholds (costly: see the module docstring); at
        least :func:`min_bootstraps`, ideally ten times ``ert``.
    method
        ``"mmd"`` or ``"lsdd"``.
    seed
        Seed of the bootstraps and of the reference split, so a reference always gives
        the same thresholds.
    feature_space
        Name of the feature space, for the caller's records.
    """

    def __init__(
        self,
        x_ref: np.ndarray,
        *,
        ert: float,
        window_size: int,
        n_bootstraps: int = 1000,
        method: OnlineDetectorName = "mmd",
        seed: int = 0,
        feature_space: str = "encoder",
    ) -> None:
        if method not in ONLINE_DETECTORS:
            raise ValueError(UNKNOWN_ONLINE_METHOD.format(name=method))
        x_ref = np.asarray(x_ref, dtype=np.float32)
        if x_ref.ndim != 2:
            raise ValueError(f"x_ref must be (n, d) features, got shape {x_ref.shape}")
        if window_size < 2 or len(x_ref) <= 2 * window_size:
            raise ValueError(SHORT_REFERENCE.format(window_size=window_size, rows=len(x_ref)))
        if ert <= 1:
            raise ValueError(f"ert must exceed 1, got {ert}")
        needed = min_bootstraps(ert, window_size)
        if n_bootstraps < needed:
            raise ValueError(
                TOO_FEW_BOOTSTRAPS.format(
                    n_bootstraps=n_bootstraps, ert=ert, window_size=window_size, needed=needed
                )
            )
        self.ert = ert
        self.window_size = window_size
        self.n_bootstraps = n_bootstraps
        self.method = method
        self.seed = seed
        self.feature_space = feature_space
        self.n_features = x_ref.shape[1]
        self.n_reference = len(x_ref)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._backend: Any = alibi_detector(
                "MMDDriftOnline" if method == "mmd" else "LSDDDriftOnline",
                x_ref,
                ert=ert,
                window_size=window_size,
                backend="pytorch",
                n_bootstraps=n_bootstraps,
                device="cpu",
                verbose=False,
            )

    @property
    def time(self) -> int:
        """Instances seen since the last reset."""
        return int(self._backend.t)

    def update(self, x: np.ndarray) -> list[OnlineVerdict]:
        """Feed one instance ``(d,)`` or a batch ``(m, d)`` in arrival order; one verdict each.

        The detector does not reset itself after an alarm: later verdicts keep scoring
        the same sliding window. Call :meth:`reset` once an alarm has been handled.
        """
        rows = np.asarray(x, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(WRONG_ROWS.format(n=self.n_features, shape=rows.shape))
        verdicts = []
        for row in rows:
            out = self._backend.predict(row, return_test_stat=True)["data"]
            verdicts.append(
                OnlineVerdict(
                    is_drift=bool(out["is_drift"]),
                    test_stat=float(out["test_stat"]),
                    threshold=float(out["threshold"]),
                    time=int(out["time"]),
                )
            )
        return verdicts

    def test_window(self, x: np.ndarray) -> WindowAlarms:
        """Feed a window's features in arrival order; its verdict, resetting after each alarm.

        The window drifts when any instance alarms. Its statistic and threshold are those of
        the instance that came closest to (or went furthest past) its threshold.
        """
        started = time.perf_counter()
        rows = np.asarray(x, dtype=np.float32)
        alarms: list[int] = []
        closest: OnlineVerdict | None = None
        for index, row in enumerate(rows):
            (verdict,) = self.update(row)
            if closest is None or verdict.test_stat - verdict.threshold > (
                closest.test_stat - closest.threshold
            ):
                closest = verdict
            if verdict.is_drift:
                alarms.append(index)
                self.reset()
        result = DriftResult(
            kind="covariate",
            detector=f"{self.method}_online",
            is_drift=bool(alarms),
            statistic=closest.test_stat if closest else 0.0,
            p_value=None,
            threshold=closest.threshold if closest else 0.0,
            feature_space=self.feature_space,
            n_reference=self.n_reference,
            n_window=len(rows),
            seconds=time.perf_counter() - started,
        )
        return WindowAlarms(result, alarms)

    def reset(self) -> None:
        """Back to time 0, same reference and thresholds (cheap: nothing is reconfigured)."""
        self._backend.reset_state()
