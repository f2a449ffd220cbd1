"""The window's drift reports and incidents, with the samples that carry each alarm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from drift.prior_shift import shares
from drift.properties import PIXEL_PROPERTIES, PropertyExplanation, explain_properties
from drift.result import DriftResult
from drift.witness import most_shifted
from service.alerts import incidents
from service.pipeline.drift import CovariateFeatures, DriftFindings
from service.pipeline.inputs import WindowInputs
from service.pipeline.prequential import Prequential
from service.pipeline.reference import Reference
from service.store.engine import Store
from service.store.schema import DriftReport


def in_groups(groups: np.ndarray, drifted: list[str]) -> np.ndarray:
    """Mask of the samples in the drifted groups (all samples when no group is named)."""
    return np.isin(groups, drifted) if drifted else np.ones(len(groups), dtype=bool)


def witness_ids(
    ids: Sequence[str],
    window_groups: np.ndarray,
    features: CovariateFeatures,
    groups: list[str],
    k: int,
) -> list[str]:
    """Ids of the ``k`` window samples of ``groups`` with the largest MMD witness against the
    reference's samples of the same groups (a covariate alarm's carriers)."""
    index = np.flatnonzero(in_groups(window_groups, groups))
    reference = features.reference[in_groups(features.reference_groups, groups)]
    return [ids[index[i]] for i in most_shifted(reference, features.window[index], k)]


def risen_class_ids(
    ids: Sequence[str],
    window_groups: np.ndarray,
    window_classes: np.ndarray,
    reference_groups: np.ndarray,
    reference_classes: np.ndarray,
    groups: list[str],
    n_classes: int,
    k: int,
) -> list[str]:
    """Ids of the first ``k`` window samples of ``groups`` in the class whose share rose most
    against the reference's samples of the same groups (a label alarm's carriers)."""
    mask = in_groups(window_groups, groups)
    rise = shares(window_classes[mask], n_classes) - shares(
        reference_classes[in_groups(reference_groups, groups)], n_classes
    )
    mask &= window_classes == int(np.argmax(rise))
    return [ids[i] for i in np.flatnonzero(mask)[:k]]


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
    if r.kind == "covariate" and findings.covariate is not None:
        return witness_ids(batch.sample_ids, batch.groups, findings.covariate, groups, k)
    if r.kind == "label":
        ref = reference.labels
        n = len(inputs.stream.classes)
        return risen_class_ids(
            batch.sample_ids, batch.groups, batch.y, ref.groups, ref.y, groups, n, k
        )
    mask = in_groups(batch.groups, groups) & ~prequential.correct
    return [batch.sample_ids[i] for i in np.flatnonzero(mask)[:k]]


def explain_covariate(
    r: DriftResult, features: CovariateFeatures | None, window_groups: np.ndarray
) -> PropertyExplanation | None:
    """In the ``properties`` feature space, what moved in a drifted covariate verdict: the
    drifted groups' properties (the whole window's when none is named) against theirs in the
    reference, each tested at the verdict's threshold; None otherwise."""
    if r.kind != "covariate" or r.feature_space != "properties" or not r.is_drift:
        return None
    if features is None:
        return None
    groups = r.drifted_groups
    return explain_properties(
        features.reference[in_groups(features.reference_groups, groups)],
        features.window[in_groups(window_groups, groups)],
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
            explanation = explain_covariate(r, findings.covariate, inputs.batch.groups)
            incidents.record_window(
                session,
                incidents.WindowDrift(stream.id, stream.name, window.seq, r, shifted, explanation),
            )
