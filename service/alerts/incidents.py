"""Drift incidents: consecutive drifted windows of one kind form one incident with one alert.

An incident opens with the first drifted window of a kind (covariate, label, concept) on a
stream, raising one ``drift.<kind>`` alert; each following drifted window extends that
alert's payload (windows, p-values, groups, most shifted samples) instead of raising
another; the first window of that kind that does not drift closes it. Operators are paged
once per incident, and the alert still tells the whole story.

The payload of an incident alert::

    {"incident": {"windows": [5, 6], "open": true, "closed_by_window": null},
     "title": "covariate drift in group B", "group": "B", "groups": ["B"],
     "p_values": [1e-4, 3e-3], "detector": "mmd", "threshold": 0.005,
     "shifted_samples": ["id-17", ...], "shifted_from": {"window": 6, "groups": ["B"]},
     "windows": [...per window...]}

``groups`` are every group that drifted in any of the incident's windows and ``title``
names them all; ``group`` is the one group when there is exactly one, else null. The
alert's message quotes the tests that fired (``group B p=0.0002 < 0.005``), not the overall
p-value when only group tests crossed the threshold.

In the ``properties`` feature space a covariate incident also says what changed in words
(:func:`drift.properties.explain_properties`): the message ends with a sentence such as
"group B's images are 30 % darker and 120 % noisier since window 12", and the payload's
``explanation`` holds it with each property's medians, relative change and p-value (the
latest window's, against the reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drift.result import DriftKind, DriftResult
from service.alerts import records as alerts
from service.store.schema import Alert

if TYPE_CHECKING:  # drift.properties brings torch: not for the API, the dashboard or status
    from drift.properties import PropertyExplanation

ALERT_KIND: dict[DriftKind, alerts.AlertKind] = {
    "covariate": "drift.covariate",
    "label": "drift.label",
    "concept": "drift.concept",
    "traffic": "drift.traffic",
}

log = logging.getLogger("learnstream.incidents")


@dataclass(frozen=True)
class WindowDrift:
    """One window's verdict of one kind, as an incident records it."""

    stream_id: int
    stream_name: str
    window: int
    result: DriftResult
    shifted_samples: list[str]
    explanation: PropertyExplanation | None = None  # the properties space's covariate verdicts


def open_incident(session: Session, stream_id: int, kind: str) -> Alert | None:
    """The stream's open incident of ``drift.<kind>``, if any (locked for update)."""
    alert = session.scalar(
        select(Alert)
        .where(Alert.stream_id == stream_id, Alert.kind == f"drift.{kind}")
        .order_by(Alert.id.desc())
        .limit(1)
        .with_for_update()
    )
    if alert is None or not (alert.payload.get("incident") or {}).get("open"):
        return None
    return alert


def record_window(session: Session, drift: WindowDrift) -> Alert | None:
    """Open, extend or close the incident of this window's kind; the incident's alert, if any.

    Only consecutive windows extend an incident: when windows in between had no verdict of
    this kind (the test was skipped), the open incident is closed at the first of them.
    """
    current = open_incident(session, drift.stream_id, drift.result.kind)
    if current is not None:
        last = current.payload["incident"]["windows"][-1]
        if drift.window > last + 1:  # the windows between were not tested for this kind
            _close(current, last + 1)
            current = None
    if not drift.result.is_drift:
        if current is not None:
            _close(current, drift.window)
        return current
    if current is None:
        return _open(session, drift)
    if drift.window not in current.payload["incident"]["windows"]:  # a retried window
        _extend(current, drift)
    return current


def _window_entry(drift: WindowDrift) -> dict[str, Any]:
    r = drift.result
    return {
        "window": drift.window,
        "statistic": r.statistic,
        "p_value": r.p_value,
        "groups": r.drifted_groups,
        "per_group": {
            g: {"p_value": v.p_value, "statistic": v.statistic, "drift": v.is_drift}
            for g, v in r.per_group.items()
        },
    }


def where(groups: list[str]) -> str:
    """Where an incident drifted: "group B", "groups A, B", or "the whole window"."""
    if not groups:
        return "the whole window"
    return f"group{'s' if len(groups) > 1 else ''} {', '.join(groups)}"


def images_of(groups: list[str]) -> str:
    """Whose images an explanation speaks of: "group B's images", "the images of groups A, B"
    or "the window's images"."""
    if not groups:
        return "the window's images"
    if len(groups) == 1:
        return f"group {groups[0]}'s images"
    return f"the images of groups {', '.join(groups)}"


def incident_title(kind: str, groups: list[str]) -> str:
    """The heading of an incident, naming every group that drifted in it."""
    return f"{kind} drift in {where(groups)}"


def fired_tests(r: DriftResult) -> list[str]:
    """The tests of a verdict that crossed their threshold, e.g. "group B p=0.0002 < 0.005"."""
    fired = []
    if r.p_value is not None and r.p_value < r.threshold:
        fired.append(f"overall p={r.p_value:.4g} < {r.threshold:.4g}")
    for group in r.drifted_groups:
        verdict = r.per_group[group]
        if verdict.p_value is not None:
            fired.append(f"group {group} p={verdict.p_value:.4g} < {r.threshold:.4g}")
        else:  # the concept detectors give no p-value; their note says what rose
            fired.append(f"group {group} {verdict.note}".rstrip())
    if not fired:  # a score test without p-values (online mode)
        fired.append(f"statistic {r.statistic:.4g} > {r.threshold:.4g}")
    return fired


def drift_message(r: DriftResult, first: int, window: int, groups: list[str], n: int) -> str:
    """An incident's alert message: the groups that drifted since window ``first``, the tests
    that fired in its latest window ``window``, and how many windows it spans (``n``)."""
    tests = "; ".join(fired_tests(r))
    unit = "traffic window" if r.kind == "traffic" else "window"  # traffic has its own numbers
    if n == 1:
        return f"{r.kind} shift in {where(groups)} from {unit} {first} ({r.detector}: {tests})"
    return (
        f"{r.kind} shift in {where(groups)} from {unit} {first} "
        f"({r.detector}: {tests} in {unit} {window}) [{n} {unit}s]"
    )


def _explained(message: str, drift: WindowDrift, first: int) -> str:
    """``message`` with the explanation's sentence after it, when the verdict has one."""
    if drift.explanation is None:
        return message
    subject = images_of(drift.result.drifted_groups)
    return f"{message}: {drift.explanation.sentence(subject, since=first)}"


def _explanation(drift: WindowDrift, first: int) -> dict[str, Any] | None:
    if drift.explanation is None:
        return None
    return drift.explanation.to_dict(images_of(drift.result.drifted_groups), since=first)


def _only(groups: list[str]) -> str | None:
    """The one group of an incident (null when it spans several or the whole window)."""
    return groups[0] if len(groups) == 1 else None


def _open(session: Session, drift: WindowDrift) -> Alert:
    r = drift.result
    groups = r.drifted_groups
    return alerts.raise_alert(
        session,
        stream_id=drift.stream_id,
        kind=ALERT_KIND[r.kind],
        severity="warning",
        subject=f"{drift.stream_name} {r.kind} incident from window {drift.window}",
        message=_explained(
            drift_message(r, drift.window, drift.window, groups, 1), drift, drift.window
        ),
        payload={
            "incident": {"windows": [drift.window], "open": True, "closed_by_window": None},
            "window": drift.window,
            "title": incident_title(r.kind, groups),
            "group": _only(groups),
            "groups": groups,
            "detector": r.detector,
            "feature_space": r.feature_space,
            "threshold": r.threshold,
            "p_values": [r.p_value],
            "shifted_samples": drift.shifted_samples,
            "shifted_from": {"window": drift.window, "groups": groups},
            "windows": [_window_entry(drift)],
            **({"explanation": _explanation(drift, drift.window)} if drift.explanation else {}),
        },
    )


def _extend(alert: Alert, drift: WindowDrift) -> None:
    # JSON columns track assignment, not mutation: build a new payload.
    payload = dict(alert.payload)
    incident = dict(payload["incident"])
    incident["windows"] = [*incident["windows"], drift.window]
    groups = sorted(set(payload.get("groups", [])) | set(drift.result.drifted_groups))
    payload.update(
        incident=incident,
        title=incident_title(drift.result.kind, groups),
        groups=groups,
        group=_only(groups),
        p_values=[*payload.get("p_values", []), drift.result.p_value],
        windows=[*payload.get("windows", []), _window_entry(drift)],
    )
    if drift.shifted_samples:
        payload.update(
            shifted_samples=drift.shifted_samples,
            shifted_from={"window": drift.window, "groups": drift.result.drifted_groups},
        )
    first = incident["windows"][0]
    if drift.explanation is not None:
        payload["explanation"] = _explanation(drift, first)
    alert.payload = payload
    alert.message = _explained(
        drift_message(drift.result, first, drift.window, groups, len(incident["windows"])),
        drift,
        first,
    )
    log.info(
        "drift.%s incident extended to window %d",
        drift.result.kind,
        drift.window,
        extra={"alert_id": alert.id, "windows": incident["windows"]},
    )


def _close(alert: Alert, window: int) -> None:
    payload = dict(alert.payload)
    payload["incident"] = {**payload["incident"], "open": False, "closed_by_window": window}
    alert.payload = payload
    log.info(
        "%s incident closed by window %d",
        alert.kind,
        window,
        extra={"alert_id": alert.id, "windows": payload["incident"]["windows"]},
    )
