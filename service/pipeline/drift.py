"""Drift tests of one window against the champion's reference: covariate, label, concept.

The stage keeps two caches of its own: the untrained encoder of the ``"encoder"`` feature
space (one per size, seed and channels, for the process), and the online detectors of
``drift_mode="online"`` (one per stream and service, rebuilt when the champion or the
settings change).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from drift.concept import concept_drift
from drift.detectors import make_covariate_detector
from drift.features import UntrainedEncoder
from drift.label import label_shift
from drift.names import PROPERTIES_DETECTOR, OnlineDetectorName
from drift.online import OnlineCovariateDetector
from drift.properties import image_properties
from drift.result import DriftResult
from learners.models import to_float
from service.config import Settings
from service.context import Service
from service.pipeline.inputs import Champion, WindowInputs
from service.pipeline.prequential import Prequential
from service.pipeline.reference import Reference
from service.store.engine import Store
from service.store.schema import Stream

log = logging.getLogger(__name__)

NO_PENULTIMATE_FEATURES = "the champion's penultimate features were not computed for this window"
ONLINE_NEEDS_MMD_OR_LSDD = "drift_mode 'online' needs drift_detector 'mmd' or 'lsdd', not {name!r}"


@dataclass(frozen=True)
class CovariateFeatures:
    """The features the covariate test compared: the reference's (with groups), the window's."""

    reference: np.ndarray
    reference_groups: np.ndarray
    window: np.ndarray


@dataclass(frozen=True)
class DriftFindings:
    """The window's verdicts, in the order covariate (when tested), label, concept."""

    results: tuple[DriftResult, ...]
    covariate: CovariateFeatures | None  # None when the reference was too small to test
    note: str = ""

    @property
    def drift(self) -> dict[str, bool]:
        return {r.kind: r.is_drift for r in self.results}

    @property
    def drifted_groups(self) -> dict[str, list[str]]:
        return {r.kind: r.drifted_groups for r in self.results if r.is_drift}

    @property
    def drifted(self) -> bool:
        return any(r.is_drift for r in self.results)


_encoders: dict[tuple[int, int, int], UntrainedEncoder] = {}
_encoders_lock = threading.Lock()


def untrained_encoder(enc_dim: int, seed: int, in_channels: int) -> UntrainedEncoder:
    """The fixed, seeded, untrained drift encoder (built once per process)."""
    key = (enc_dim, seed, in_channels)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = UntrainedEncoder(enc_dim, seed, in_channels)
        return _encoders[key]


class OnlineDetectors:
    """One online drift detector per stream, kept while its key (stream row, champion,
    settings: :func:`online_detector_key`) holds.

    Online detectors carry their run (time since the last alarm) from window to window,
    so the learner keeps one per stream in memory, built when the key changes (a new
    champion means a new reference). A restarted learner starts a new run: the thresholds
    are seeded, so only the time since the last alarm is lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # stream -> (key, detector, the last window it tested)
        self._current: dict[str, tuple[tuple[object, ...], OnlineCovariateDetector, int]] = {}

    def get(
        self,
        stream: str,
        key: tuple[object, ...],
        window: int,
        build: Callable[[], OnlineCovariateDetector],
    ) -> OnlineCovariateDetector:
        """The stream's detector for ``key`` to test ``window`` with, built by ``build()`` if
        it has none for it, or if the one it has did not test the window before (another
        learner did, when learners scale out: its run is not this one's to continue)."""
        with self._lock:
            current = self._current.get(stream)
            if current is not None and current[0] == key and current[2] == window - 1:
                self._current[stream] = (key, current[1], window)
                return current[1]
        detector = build()
        with self._lock:
            self._current[stream] = (key, detector, window)
        return detector


# One set of online detectors per store (a service and its per-stream views share it).
_online: weakref.WeakKeyDictionary[Store, OnlineDetectors] = weakref.WeakKeyDictionary()
_online_lock = threading.Lock()


def online_detectors(service: Service) -> OnlineDetectors:
    """The online detectors of ``service``'s streams."""
    with _online_lock:
        detectors = _online.get(service.store)
        if detectors is None:
            detectors = _online[service.store] = OnlineDetectors()
        return detectors


def online_detector_key(settings: Settings, stream: Stream, champion: int) -> tuple[object, ...]:
    """What an online detector is built for: the stream row (a stream deleted and recreated
    under its name, whose champion is again version 1, starts a new run), its champion and
    the settings of the test."""
    return (
        stream.id,
        stream.created_at,
        champion,
        settings.drift_feature_space,
        settings.drift_detector,
        settings.drift_online_ert,
        settings.drift_online_window,
        settings.drift_online_bootstraps,
    )


def _online_method(settings: Settings) -> OnlineDetectorName:
    if settings.drift_detector == "mmd":
        return "mmd"
    if settings.drift_detector == "lsdd":
        return "lsdd"
    raise ValueError(ONLINE_NEEDS_MMD_OR_LSDD.format(name=settings.drift_detector))


def _build_online(settings: Settings, reference: np.ndarray) -> OnlineCovariateDetector:
    """Configure an online detector on the reference features (seconds of CPU)."""
    # Thousands of tiny torch ops: on a shared machine, extra intra-op threads only
    # wait for busy cores (15-70x slower measured; see drift.online).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return OnlineCovariateDetector(
            reference,
            ert=settings.drift_online_ert,
            window_size=settings.drift_online_window,
            n_bootstraps=settings.drift_online_bootstraps,
            method=_online_method(settings),
            seed=settings.seed,
            feature_space=settings.drift_feature_space,
        )
    finally:
        torch.set_num_threads(threads)


def covariate_features(
    settings: Settings, inputs: WindowInputs, champion: Champion, reference: Reference
) -> CovariateFeatures:
    """Reference and window in the configured feature space (the champion's outputs, the
    untrained encoder's, or the images' properties: :data:`drift.properties.PIXEL_PROPERTIES`,
    as the original sizes are not stored)."""
    return features_of(settings, inputs.batch.x, champion.outputs.features, reference)


def features_of(
    settings: Settings, x: torch.Tensor, penultimate: np.ndarray | None, reference: Reference
) -> CovariateFeatures:
    """The reference and the images ``x`` (uint8) in the configured feature space;
    ``penultimate``: the champion's penultimate features of ``x``, when it computed them.
    Labelled windows and traffic windows are embedded alike."""
    if settings.drift_feature_space == "penultimate":
        if penultimate is None or reference.features is None:
            raise ValueError(NO_PENULTIMATE_FEATURES)
        return CovariateFeatures(reference.features, reference.holdout.groups, penultimate)
    if settings.drift_feature_space == "properties":
        return CovariateFeatures(
            image_properties(reference.holdout.x).values,
            reference.holdout.groups,
            image_properties(x).values,
        )
    encoder = untrained_encoder(settings.drift_encoder_dim, settings.drift_encoder_seed, x.shape[1])
    return CovariateFeatures(
        encoder.encode(to_float(reference.holdout.x)),
        reference.holdout.groups,
        encoder.encode(to_float(x)),
    )


def windowed_covariate_test(
    settings: Settings,
    features: CovariateFeatures,
    groups: list[str],
    *,
    seed: int,
    p_value: float | None = None,
) -> DriftResult:
    """The per-window covariate test of ``features.window`` (with ``groups``) against the
    reference, at ``p_value`` (default ``drift_p_value``) before the groups' correction."""
    properties = settings.drift_feature_space == "properties"
    grouped = make_covariate_detector(
        PROPERTIES_DETECTOR if properties else settings.drift_detector,
        features.reference,
        features.reference_groups.tolist(),
        p_value=settings.drift_p_value if p_value is None else p_value,
        n_permutations=settings.drift_permutations,
        min_group_size=settings.min_drift_group_size,
        seed=seed,
        feature_space=settings.drift_feature_space,
    )
    return grouped.test(features.window, groups)


def run_covariate_test(
    service: Service, inputs: WindowInputs, champion: Champion, features: CovariateFeatures
) -> DriftResult:
    """The covariate test of the window against the champion's held-out reference."""
    s = service.settings
    if s.drift_mode == "online":
        key = online_detector_key(s, inputs.stream, champion.version)

        def build() -> OnlineCovariateDetector:
            log.info(
                "configuring the online drift detector",
                extra={"stream": inputs.stream.name, "window": inputs.window.seq},
            )
            return _build_online(s, features.reference)

        detector = online_detectors(service).get(inputs.stream.name, key, inputs.window.seq, build)
        return detector.test_window(features.window).result
    return windowed_covariate_test(
        s, features, inputs.batch.groups.tolist(), seed=s.seed + inputs.window.seq
    )


def run_drift_tests(
    service: Service,
    inputs: WindowInputs,
    champion: Champion,
    prequential: Prequential,
    reference: Reference,
) -> DriftFindings:
    """Covariate (when the reference is large enough), label and concept tests of the window."""
    s = service.settings
    batch = inputs.batch
    results: list[DriftResult] = []
    covariate, note = None, ""
    needed = s.min_drift_group_size
    if s.drift_mode == "online":
        needed = max(needed, 2 * s.drift_online_window + 1)
    if len(reference.holdout) >= needed:
        covariate = covariate_features(s, inputs, champion, reference)
        results.append(run_covariate_test(service, inputs, champion, covariate))
    else:
        note = f"reference too small for the covariate test ({len(reference.holdout)})"
    results.append(
        label_shift(
            reference.labels.y.tolist(),
            reference.labels.groups.tolist(),
            batch.y.tolist(),
            batch.groups.tolist(),
            n_classes=len(inputs.stream.classes),
            p_value=s.drift_p_value,
            min_group_size=s.min_drift_group_size,
        )
    )
    results.append(
        concept_drift(
            reference.error_history,
            prequential.errors,
            delta=s.concept_delta,
            detector=s.concept_detector,
        )
    )
    return DriftFindings(tuple(results), covariate, note)
