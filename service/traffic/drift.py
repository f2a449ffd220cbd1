"""Drift on traffic: each closed traffic window tested against the champion's reference,
before any of its labels arrive.

Two tests, each at half of ``traffic_p_value`` (Bonferroni over the pair; the default is
half of ``drift_p_value``: traffic windows come often, and each alarm pages) and corrected
over the groups as the labelled tests are: the covariate test of the served images, in the
stream's feature space, overall and per group (the caller's groups; images sent without one
are tested overall only); and the chi-square of the classes the champion predicts on them
against those it predicts on the reference (a label-shift signal that needs no labels),
with the class priors this implies (:func:`drift.prior_shift.estimate_priors`). Their
verdict is one ``drift.traffic`` incident (:mod:`service.alerts.incidents`), numbered by
traffic windows, naming the most shifted served images.

A learner tests a stream's closed traffic windows, oldest first, before its labelled ones
(:func:`check_pending_traffic`): a window is claimed (``testing``), then stored ``tested``
with its verdict in ``summary``; a claim older than :data:`STALE_CLAIM` seconds (a learner
that died) is taken again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from drift.label import label_shift
from drift.prior_shift import PriorEstimate, estimate_priors
from drift.properties import PropertyExplanation
from drift.result import DriftResult, GroupVerdict
from service.alerts import incidents
from service.context import Service
from service.models.registry import LoadedVersion
from service.pipeline.drift import features_of, windowed_covariate_test
from service.pipeline.eras import latest_eras
from service.pipeline.inputs import ModelOutputs, model_outputs
from service.pipeline.records import explain_covariate, risen_class_ids, witness_ids
from service.pipeline.reference import Reference, load_reference
from service.store.batches import images_tensor
from service.store.schema import Stream, Traffic, TrafficWindow, utcnow

log = logging.getLogger(__name__)

STALE_CLAIM = 600.0  # seconds after which a traffic window's claim is taken again
UNNAMED = ""  # the group of images predicted without one
SEED_OFFSET = 1_000_003  # traffic tests draw permutations apart from the labelled windows'


@dataclass(frozen=True)
class TrafficImages:
    """One traffic window's images (uint8 at the stream's shape), their names and groups."""

    x: torch.Tensor
    ids: list[str]
    groups: np.ndarray


@dataclass(frozen=True)
class TrafficVerdict:
    """One traffic window's tests; ``to_dict`` is the window's stored ``summary``."""

    stream: str
    window: int
    champion: int | None
    images: int
    covariate: DriftResult | None = None
    prediction: DriftResult | None = None
    priors: PriorEstimate | None = None
    shifted: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def tested(self) -> bool:
        return self.covariate is not None and self.prediction is not None

    @property
    def drift(self) -> bool:
        return any(r.is_drift for r in (self.covariate, self.prediction) if r is not None)

    @property
    def groups(self) -> list[str]:
        named = {g for r in (self.covariate, self.prediction) if r for g in r.drifted_groups}
        return sorted(named)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "champion": self.champion,
            "images": self.images,
            "tested": self.tested,
            "drift": self.drift,
            "groups": self.groups,
            "covariate": _brief(self.covariate),
            "prediction": _brief(self.prediction),
            "priors": self.priors.to_dict() if self.priors else None,
            "shifted": self.shifted,
            "note": self.note,
        }


def _brief(r: DriftResult | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "detector": r.detector,
        "drift": r.is_drift,
        "p_value": r.p_value,
        "threshold": r.threshold,
        "groups": r.drifted_groups,
        "per_group": {g: v.p_value for g, v in r.per_group.items() if v.tested},
    }


def claim_traffic_window(session: Session, stream_id: int) -> TrafficWindow | None:
    """The stream's oldest closed traffic window not yet tested, claimed for this learner."""
    stale = utcnow() - timedelta(seconds=STALE_CLAIM)
    claimable = or_(
        TrafficWindow.state == "closed",
        and_(TrafficWindow.state == "testing", TrafficWindow.tested_at < stale),
    )
    candidate = session.scalar(
        select(TrafficWindow)
        .where(TrafficWindow.stream_id == stream_id, claimable)
        .order_by(TrafficWindow.seq)
        .limit(1)
    )
    if candidate is None:
        return None
    claimed = session.execute(
        update(TrafficWindow)
        .where(TrafficWindow.id == candidate.id, claimable)
        .values(state="testing", tested_at=utcnow())
    )
    return candidate if claimed.rowcount == 1 else None  # type: ignore[attr-defined]


def load_traffic(session: Session, stream: Stream, window_id: int) -> TrafficImages:
    """The images of one traffic window, in arrival order."""
    rows = session.execute(
        select(Traffic.traffic_id, Traffic.group, Traffic.pixels)
        .where(Traffic.window_id == window_id)
        .order_by(Traffic.id)
    ).all()
    return TrafficImages(
        x=images_tensor([r.pixels for r in rows], stream),
        ids=[r.traffic_id for r in rows],
        groups=np.array([r.group if r.group is not None else UNNAMED for r in rows], dtype=object),
    )


def combined(covariate: DriftResult, prediction: DriftResult) -> DriftResult:
    """The traffic verdict of the incident: drift when either test fired; each group's
    verdict is its test nearer to firing (the lower p-value)."""
    per_group: dict[str, GroupVerdict] = {}
    for group in sorted(set(covariate.per_group) | set(prediction.per_group)):
        verdicts = [r.per_group[group] for r in (covariate, prediction) if group in r.per_group]
        fired = [v for v in verdicts if v.is_drift]
        tested = [v for v in verdicts if v.p_value is not None]
        per_group[group] = min(fired or tested or verdicts, key=lambda v: v.p_value or 1.0)
    p_values = [p for p in (covariate.p_value, prediction.p_value) if p is not None]
    return replace(
        covariate,
        kind="traffic",
        detector=f"{covariate.detector} on served images + chi2 on predicted classes",
        is_drift=covariate.is_drift or prediction.is_drift,
        p_value=min(p_values) if p_values else None,
        threshold=min(covariate.threshold, prediction.threshold),
        per_group=per_group,
        seconds=covariate.seconds + prediction.seconds,
    )


@dataclass(frozen=True)
class _Tested:
    verdict: TrafficVerdict
    result: DriftResult
    explanation: PropertyExplanation | None


def run_traffic_tests(
    service: Service,
    stream: Stream,
    champion: LoadedVersion,
    seq: int,
    images: TrafficImages,
    reference: Reference,
) -> _Tested:
    """The covariate and prediction tests of traffic window ``seq`` against ``reference``."""
    s = service.settings
    penultimate = s.drift_feature_space == "penultimate"
    outputs: ModelOutputs = model_outputs(champion.model, images.x, features=penultimate)
    features = features_of(s, images.x, outputs.features, reference)
    half = s.traffic_p_value / 2  # two tests per traffic window
    groups = images.groups.tolist()
    covariate = windowed_covariate_test(
        s, features, groups, seed=s.seed + SEED_OFFSET + seq, p_value=half
    )
    reference_predicted = reference.probabilities.argmax(axis=1)
    n_classes = reference.probabilities.shape[1]
    prediction = replace(
        label_shift(
            reference_predicted.tolist(),
            reference.holdout.groups.tolist(),
            outputs.predictions.tolist(),
            groups,
            n_classes=n_classes,
            p_value=half,
            min_group_size=s.min_drift_group_size,
        ),
        feature_space="predicted classes",
    )
    priors = estimate_priors(
        reference_predicted, reference.holdout.y, outputs.predictions, n_classes
    )
    result = combined(covariate, prediction)
    shifted: list[str] = []
    if covariate.is_drift:
        shifted = witness_ids(
            images.ids, images.groups, features, covariate.drifted_groups, s.incident_samples
        )
    elif prediction.is_drift:
        shifted = risen_class_ids(
            images.ids,
            images.groups,
            outputs.predictions,
            reference.holdout.groups,
            reference_predicted,
            prediction.drifted_groups,
            n_classes,
            s.incident_samples,
        )
    verdict = TrafficVerdict(
        stream.name,
        seq,
        champion.version,
        len(images.ids),
        covariate,
        prediction,
        priors,
        shifted,
    )
    return _Tested(verdict, result, explain_covariate(covariate, features, images.groups))


def check_traffic_window(service: Service, stream: Stream, window: TrafficWindow) -> TrafficVerdict:
    """Test one claimed traffic window, record its verdict and incident, mark it tested."""
    s = service.settings
    with service.store.session() as session:
        images = load_traffic(session, stream, window.id)
        last_seq, eras = latest_eras(session, stream.id)
    version = service.registry.champion(stream.id)
    tested: _Tested | None = None
    if version is None:
        verdict = TrafficVerdict(stream.name, window.seq, None, len(images.ids), note="no champion")
    elif len(images.ids) < s.min_drift_group_size:
        verdict = TrafficVerdict(
            stream.name, window.seq, version, len(images.ids), note="too few images to test"
        )
    else:
        champion = service.version(stream.name, version)
        reference = load_reference(
            service.store,
            stream,
            champion,
            seq=last_seq + 1,
            eras=eras,
            limit=s.reference_size,
            features=s.drift_feature_space == "penultimate",
        )
        if len(reference.holdout) < s.min_drift_group_size:
            verdict = TrafficVerdict(
                stream.name,
                window.seq,
                version,
                len(images.ids),
                note=f"reference too small ({len(reference.holdout)})",
            )
        else:
            tested = run_traffic_tests(service, stream, champion, window.seq, images, reference)
            verdict = tested.verdict
    with service.store.session() as session:
        if tested is not None:
            incidents.record_window(
                session,
                incidents.WindowDrift(
                    stream.id,
                    stream.name,
                    window.seq,
                    tested.result,
                    verdict.shifted,
                    tested.explanation,
                ),
            )
        session.execute(
            update(TrafficWindow)
            .where(TrafficWindow.id == window.id)
            .values(state="tested", tested_at=utcnow(), summary=verdict.to_dict())
        )
    log.info(
        "traffic window tested",
        extra={
            "stream": stream.name,
            "traffic_window": window.seq,
            "drift": verdict.drift,
            "groups": verdict.groups,
            "note": verdict.note,
        },
    )
    return verdict


def check_pending_traffic(service: Service, stream_name: str) -> list[TrafficVerdict]:
    """Test every closed traffic window of the stream, oldest first."""
    verdicts: list[TrafficVerdict] = []
    while True:
        with service.store.session() as session:
            stream = service.store.stream(session, stream_name)
            window = claim_traffic_window(session, stream.id)
        if window is None:
            return verdicts
        try:
            verdicts.append(check_traffic_window(service, stream, window))
        except BaseException:
            with service.store.session() as session:  # give the claim back for the next try
                session.execute(
                    update(TrafficWindow)
                    .where(TrafficWindow.id == window.id, TrafficWindow.state == "testing")
                    .values(state="closed", tested_at=None)
                )
            raise
