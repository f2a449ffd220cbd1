"""Alerts: stored in the store and logged, one row per event (or per burst for rejections)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.schema import Alert, utcnow

log = logging.getLogger("learnstream.alerts")

AlertKind = Literal[
    "drift.covariate",
    "drift.label",
    "drift.concept",
    "fairness.regression",
    "fairness.gap",
    "ingest.rejected",
    "update.failed",
]
Severity = Literal["info", "warning", "critical"]
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def raise_alert(
    session: Session,
    *,
    stream_id: int | None,
    kind: AlertKind,
    severity: Severity,
    subject: str,
    message: str,
    payload: dict[str, Any],
) -> Alert:
    """Store an alert and log it with its kind and subject as structured fields."""
    alert = Alert(
        stream_id=stream_id,
        kind=kind,
        severity=severity,
        subject=subject,
        message=message,
        payload=payload,
        acknowledged=False,
    )
    session.add(alert)
    session.flush()
    log.log(
        _LOG_LEVEL[severity],
        "%s: %s",
        kind,
        message,
        extra={"alert_id": alert.id, "alert_kind": kind, "subject": subject},
    )
    return alert


def raise_or_extend_burst(
    session: Session,
    *,
    stream_id: int | None,
    kind: AlertKind,
    subject: str,
    counts: dict[str, int],
    burst: timedelta,
) -> Alert:
    """Add ``counts`` to this kind and subject's open alert of the last ``burst``, or raise one."""
    since = utcnow() - burst
    current = session.scalar(
        select(Alert)
        .where(
            Alert.kind == kind,
            Alert.subject == subject,
            Alert.acknowledged.is_(False),
            Alert.created_at >= since,
        )
        .order_by(Alert.id.desc())
        .limit(1)
        .with_for_update()
    )
    if current is None:
        total = sum(counts.values())
        return raise_alert(
            session,
            stream_id=stream_id,
            kind=kind,
            severity="warning",
            subject=subject,
            message=f"{total} sample(s) rejected on {subject}",
            payload={"counts": counts, "total": total},
        )
    merged = dict(current.payload.get("counts", {}))
    for reason, n in counts.items():
        merged[reason] = merged.get(reason, 0) + n
    total = sum(merged.values())
    current.payload = {"counts": merged, "total": total}
    current.message = f"{total} sample(s) rejected on {subject}"
    return current


def acknowledge(session: Session, alert_id: int, by: str) -> Alert | None:
    """Mark an alert acknowledged by ``by`` now; ``None`` when there is no such alert."""
    alert = session.get(Alert, alert_id)
    if alert is not None and not alert.acknowledged:
        alert.acknowledged, alert.acknowledged_by, alert.acknowledged_at = True, by, utcnow()
    return alert
