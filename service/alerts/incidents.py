"""Drift incidents: consecutive drifted windows of one kind form one incident with one alert.

An incident opens with the first drifted window of a kind (covariate, label, concept) on a
stream, raising one ``drift.<kind>`` alert; each following drifted window extends that
alert's payload (windows, p-values, groups, most shifted samples) instead of raising
another; the first window of that kind that does not drift closes it. Operators are paged
once per incident, and the alert still tells the whole story.

The payload of an incident alert::

    {"incident": {"windows": [5, 6], "open": true, "closed_by_window": null},
     "group": "B", "groups": ["B"], "p_values": [1e-4, 3e-3], "detector": "mmd",
     "threshold": 0.005, "shifted_samples": ["id-17", ...], "windows": {...per window...}}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drift.result import DriftKind, DriftResult
from service.alerts import records as alerts
from service.store.schema import Alert

ALERT_KIND: dict[DriftKind, alerts.AlertKind] = {
    "covariate": "drift.covariate",
    "label": "drift.label",
    "concept": "drift.concept",
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


def _open(session: Session, drift: WindowDrift) -> Alert:
    r = drift.result
    groups = r.drifted_groups
    where = f"group(s) {', '.join(groups)}" if groups else "the whole window"
    p = f", p={r.p_value:.4g} against {r.threshold:.4g}" if r.p_value is not None else ""
    return alerts.raise_alert(
        session,
        stream_id=drift.stream_id,
        kind=ALERT_KIND[r.kind],
        severity="warning",
        subject=f"{drift.stream_name} {r.kind} incident from window {drift.window}",
        message=f"{r.kind} shift in {where} from window {drift.window} ({r.detector}{p})",
        payload={
            "incident": {"windows": [drift.window], "open": True, "closed_by_window": None},
            "window": drift.window,
            "group": groups[0] if groups else None,
            "groups": groups,
            "detector": r.detector,
            "feature_space": r.feature_space,
            "threshold": r.threshold,
            "p_values": [r.p_value],
            "shifted_samples": drift.shifted_samples,
            "windows": [_window_entry(drift)],
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
        groups=groups,
        group=payload.get("group") or (groups[0] if groups else None),
        p_values=[*payload.get("p_values", []), drift.result.p_value],
        shifted_samples=drift.shifted_samples or payload.get("shifted_samples", []),
        windows=[*payload.get("windows", []), _window_entry(drift)],
    )
    alert.payload = payload
    alert.message = f"{alert.message.split(' [')[0]} [{len(incident['windows'])} windows]"
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
