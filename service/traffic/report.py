"""Traffic drift as operators read it: how many traffic windows were tested and drifted, the
latest verdicts, and the open ``drift.traffic`` incident; ``traffic_drift`` in ``learnstream
status --json`` and ``GET /v1/status``, the dashboard's traffic section and the metrics."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.schema import Alert, TrafficWindow

RECENT = 20  # traffic windows listed, newest first


def traffic_verdict_counts(session: Session, stream_id: int) -> dict[str, int]:
    """Traffic windows per verdict: ``drift``, ``no_drift``, ``untested`` (tested windows
    that could not be: no champion, too few images or reference), ``waiting`` (closed, not
    tested yet)."""
    counts = {"drift": 0, "no_drift": 0, "untested": 0, "waiting": 0}
    tested = TrafficWindow.summary["tested"].as_boolean()
    drift = TrafficWindow.summary["drift"].as_boolean()
    for state, was_tested, drifted, n in session.execute(
        select(TrafficWindow.state, tested, drift, func.count())
        .where(TrafficWindow.stream_id == stream_id, TrafficWindow.state != "open")
        .group_by(TrafficWindow.state, tested, drift)
    ):
        if state != "tested":
            counts["waiting"] += n
        elif not was_tested:
            counts["untested"] += n
        else:
            counts["drift" if drifted else "no_drift"] += n
    return counts


def latest_traffic_incident(session: Session, stream_id: int) -> dict[str, Any] | None:
    """The stream's latest ``drift.traffic`` incident (open or closed), or None."""
    alert = session.scalar(
        select(Alert)
        .where(Alert.stream_id == stream_id, Alert.kind == "drift.traffic")
        .order_by(Alert.id.desc())
        .limit(1)
    )
    if alert is None:
        return None
    return {
        "alert_id": alert.id,
        "open": bool(alert.payload["incident"]["open"]),
        "traffic_windows": alert.payload["incident"]["windows"],
        "groups": alert.payload.get("groups", []),
        "message": alert.message,
    }


def traffic_drift_status(session: Session, stream_id: int, recent: int = RECENT) -> dict[str, Any]:
    """The stream's traffic drift: verdict counts, the latest ``recent`` tested windows'
    summaries (newest first) and its latest ``drift.traffic`` incident (open or not)."""
    tested = session.scalars(
        select(TrafficWindow.summary)
        .where(TrafficWindow.stream_id == stream_id, TrafficWindow.state == "tested")
        .order_by(TrafficWindow.seq.desc())
        .limit(recent)
    ).all()
    windows = session.scalar(
        select(func.count()).select_from(TrafficWindow).where(TrafficWindow.stream_id == stream_id)
    )
    return {
        "traffic_windows": int(windows or 0),
        "verdicts": traffic_verdict_counts(session, stream_id),
        "recent": [s for s in tested if s],
        "incident": latest_traffic_incident(session, stream_id),
    }
