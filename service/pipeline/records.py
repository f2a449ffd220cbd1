"""The window's drift reports and incidents, with the samples that carry each alarm."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from drift.properties import PIXEL_PROPERTIES, PropertyExplanation, explain_properties
from drift.result import DriftResult
from drift.witness import most_shifted
from service.alerts import incidents
from service.pipeline.drift import DriftFindings
from service.pipeline.inputs import WindowInputs
from service.pipeline.prequential import Prequential
from service.pipeline.reference import Reference
from service.store.engine import Store
from service.store.schema import DriftReport


def _shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of ``labels``."""
    return np.bincount(labels, minlength=n_classes) / max(len(labels), 1)


def _in_groups(groups: np.ndarray, drifted: list[str]) -> np.ndarray:
    """Mask of the samples in the drifted groups (all samples when no group is named)."""
    return np.isin(groups, drifted) if drifted else np.ones(len(groups), dtype=bool)


def shifted_samples(
    r: DriftResult,
    inputs: WindowInputs,
    prequential: Prequential,
    reference: Reference,
    findings: DriftFindings,
    k: int,
) -> list[str]:
    """Ids of the window's samples that carry the alarm, for operators to look at.

    Covariate: the largest MMD witness in the drifted groups' feature space; label: the
    samples of the class whose share rose most; concept: the champion's errors.
    """
    batch, groups = inputs.batch, r.drifted_groups
    in_groups = _in_groups(batch.groups, groups)
    if r.kind == "covariate" and findings.covariate is not None:
        features = findings.covariate
        ref_mask = _in_groups(features.reference_groups, groups)
        index = np.flatnonzero(in_groups)
        chosen = most_shifted(features.reference[ref_mask], features.window[index], k)
        return [batch.sample_ids[index[i]] for i in chosen]
    if r.kind == "label":
        ref, n = reference.labels, len(inputs.stream.classes)
        rise = _shares(batch.y[in_groups], n) - _shares(ref.y[_in_groups(ref.groups, groups)], n)
        mask = in_groups & (batch.y == int(np.argmax(rise)))
    else:
        mask = in_groups & ~prequential.correct
    return [batch.sample_ids[i] for i in np.flatnonzero(mask)[:k]]


def property_explanation(
    r: DriftResult, inputs: WindowInputs, findings: DriftFindings
) -> PropertyExplanation | None:
    """In the ``properties`` feature space, what moved in a drifted covariate verdict: the
    drifted groups' properties (the whole window's when none is named) against theirs in the
    reference, each tested at the verdict's threshold; None otherwise."""
    features = findings.covariate
    if r.kind != "covariate" or r.feature_space != "properties" or not r.is_drift:
        return None
    if features is None:
        return None
    groups = r.drifted_groups
    return explain_properties(
        features.reference[_in_groups(features.reference_groups, groups)],
        features.window[_in_groups(inputs.batch.groups, groups)],
        names=PIXEL_PROPERTIES,
        threshold=r.threshold,
    )


def record_drift(
    store: Store,
    inputs: WindowInputs,
    prequential: Prequential,
    reference: Reference,
    findings: DriftFindings,
    incident_samples: int,
) -> None:
    """Store one drift report per verdict and open, extend or close each kind's incident."""
    stream, window = inputs.stream, inputs.window
    with store.session() as session:
        for r in findings.results:
            session.add(
                DriftReport(
                    stream_id=stream.id,
                    window_id=window.id,
                    kind=r.kind,
                    detector=r.detector,
                    statistic=r.statistic,
                    p_value=r.p_value,
                    threshold=r.threshold,
                    is_drift=r.is_drift,
                    per_group={g: asdict(v) for g, v in r.per_group.items()},
                    feature_space=r.feature_space,
                    reference_version=inputs.champion_version,
                    n_reference=r.n_reference,
                    n_window=r.n_window,
                    seconds=r.seconds,
                )
            )
            shifted = (
                shifted_samples(r, inputs, prequential, reference, findings, incident_samples)
                if r.is_drift
                else []
            )
            explanation = property_explanation(r, inputs, findings)
            incidents.record_window(
                session,
                incidents.WindowDrift(stream.id, stream.name, window.seq, r, shifted, explanation),
            )
