"""Alerts: stored in the store and logged, one row per event (or per burst for rejections).

Sinks beyond the log (the webhook, :mod:`service.alerts.webhook`) never run inside the transaction
that raises an alert: :func:`raise_alert` notes the new alert's id on its session, and
:func:`after_commit` hands the ids to a sink only once that transaction committed (and
forgets them when it rolls back), so a slow or broken receiver cannot delay, fail or roll
back the pipeline, and no receiver hears of an alert the store does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, SessionTransaction

from service.errors import AlertNotFound
from service.store.engine import Store
from service.store.schema import Alert, iso, utcnow

log = logging.getLogger("learnstream.alerts")

AlertKind = Literal[
    "drift.covariate",
    "drift.label",
    "drift.concept",
    "drift.traffic",
    "fairness.regression",
    "fairness.gap",
    "ingest.rejected",
    "update.failed",
    "model.promoted",
    "model.rolled_back",
    "labels.suspect",
]
Severity = Literal["info", "warning", "critical"]
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
RAISED = "learnstream.raised_alerts"  # key in ``Session.info``: ids raised in this transaction


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
    session.info.setdefault(RAISED, []).append(alert.id)
    log.log(
        _LOG_LEVEL[severity],
        "%s: %s",
        kind,
        message,
        extra={"alert_id": alert.id, "alert_kind": kind, "subject": subject},
    )
    return alert


def record_event(
    session: Session,
    *,
    stream_id: int,
    kind: AlertKind,
    subject: str,
    message: str,
    payload: dict[str, Any],
) -> Alert:
    """Store an event that needs no one's action (a champion changed): an ``info`` alert,
    acknowledged as it is raised, so sinks hear of it and open alerts stay the ones to act on."""
    event = raise_alert(
        session,
        stream_id=stream_id,
        kind=kind,
        severity="info",
        subject=subject,
        message=message,
        payload=payload,
    )
    event.acknowledged, event.acknowledged_by, event.acknowledged_at = True, "learnstream", utcnow()
    return event


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


def alert_dict(a: Alert) -> dict[str, Any]:
    """An alert as operators see it: the CLI, ``GET /v1/alerts`` and the webhook's body."""
    return {
        "id": a.id,
        "kind": a.kind,
        "severity": a.severity,
        "subject": a.subject,
        "message": a.message,
        "payload": a.payload,
        "time": iso(a.created_at),
        "acknowledged": a.acknowledged,
        "acknowledged_by": a.acknowledged_by,
        "acknowledged_at": iso(a.acknowledged_at),
    }


def acknowledge(session: Session, alert_id: int, by: str) -> Alert | None:
    """Mark an alert acknowledged by ``by`` now; ``None`` when there is no such alert."""
    alert = session.get(Alert, alert_id)
    if alert is not None and not alert.acknowledged:
        alert.acknowledged, alert.acknowledged_by, alert.acknowledged_at = True, by, utcnow()
    return alert


def acknowledge_alert(store: Store, alert_id: int, by: str) -> dict[str, Any]:
    """Acknowledge an alert as ``by`` and return it as operators see it: the one path of
    ``POST /v1/alerts/{id}/ack`` and ``learnstream alerts ack``. Acknowledging it again keeps
    the first acknowledgement; an unknown id raises :class:`AlertNotFound`."""
    with store.session() as session:
        alert = acknowledge(session, alert_id, by)
        if alert is None:
            raise AlertNotFound(f"no alert {alert_id}")
        return alert_dict(alert)


def after_commit(store: Store, deliver: Callable[[list[int]], None]) -> None:
    """Call ``deliver(ids)`` with the alerts each of ``store``'s transactions raised, once it
    has committed; a rolled-back transaction's alerts are forgotten. ``deliver`` runs in the
    committing thread, so it must only hand the ids on (a queue); its errors are logged and
    never reach the code that committed."""

    def committed(session: Session) -> None:
        ids = session.info.pop(RAISED, None)
        if not ids:
            return
        try:
            deliver(list(ids))
        except Exception:
            log.exception("could not hand alerts %s to their sinks", ids)

    def rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
        if previous_transaction.parent is None:  # the whole transaction, not a savepoint
            session.info.pop(RAISED, None)

    store.listen("after_commit", committed)
    store.listen("after_soft_rollback", rolled_back)
