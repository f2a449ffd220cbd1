"""Read-side views for operators (CLI, API): status, alerts, models, drift; and stream removal."""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select

from service.context import Service
from service.store.schema import (
    Alert,
    Champion,
    DriftReport,
    ModelVersion,
    Rejection,
    Sample,
    Stream,
    Window,
    as_utc,
    utcnow,
)
from service.store.streams import champion_version

RATE_WINDOW_S = 60.0


def _backlog(session, stream_id: int) -> dict[str, float | int]:  # type: ignore[no-untyped-def]
    """What waits: the recent ingest rate, the open window, windows queued and the lag."""
    now = utcnow()
    recent = session.scalar(
        select(func.count())
        .select_from(Sample)
        .where(
            Sample.stream_id == stream_id,
            Sample.received_at >= now - timedelta(seconds=RATE_WINDOW_S),
        )
    )
    waiting = session.scalar(
        select(func.coalesce(func.sum(Window.size), 0)).where(
            Window.stream_id == stream_id, Window.state == "open"
        )
    )
    queued = session.execute(
        select(func.count(), func.min(Window.closed_at)).where(
            Window.stream_id == stream_id, Window.state.in_(("closed", "processing"))
        )
    ).one()
    lag = (now - as_utc(queued[1])).total_seconds() if queued[1] is not None else 0.0
    return {
        "ingest_rate_per_s": round(recent / RATE_WINDOW_S, 3),
        "samples_waiting": int(waiting),
        "windows_queued": int(queued[0]),
        "learner_lag_s": round(lag, 1),
    }


def status(service: Service) -> dict[str, Any]:
    """Per stream: samples, rejections, windows by state, the champion and the backlog."""
    streams: dict[str, Any] = {}
    with service.store.session() as session:
        for stream in session.scalars(select(Stream).order_by(Stream.name)):
            states = dict(
                session.execute(
                    select(Window.state, func.count())
                    .where(Window.stream_id == stream.id)
                    .group_by(Window.state)
                ).all()
            )
            streams[stream.name] = {
                "samples": session.scalar(
                    select(func.count()).select_from(Sample).where(Sample.stream_id == stream.id)
                ),
                "rejected": session.scalar(
                    select(func.count())
                    .select_from(Rejection)
                    .where(Rejection.stream_name == stream.name)
                ),
                "windows": {
                    "open": states.get("open", 0),
                    "closed": states.get("closed", 0) + states.get("processing", 0),
                    "processed": states.get("processed", 0),
                },
                "champion": champion_version(session, stream.id),
                "backlog": _backlog(session, stream.id),
            }
    return {"streams": streams}


def _stream_filter(query, column, service: Service, session, stream: str | None):  # type: ignore[no-untyped-def]
    if stream is None:
        return query
    return query.where(column == service.store.stream(session, stream).id)


def list_alerts(
    service: Service, stream: str | None = None, *, include_acknowledged: bool = True
) -> list[dict[str, Any]]:
    """Alerts, newest first."""
    with service.store.session() as session:
        query = _stream_filter(select(Alert), Alert.stream_id, service, session, stream)
        if not include_acknowledged:
            query = query.where(Alert.acknowledged.is_(False))
        return [alert_dict(a) for a in session.scalars(query.order_by(Alert.id.desc()))]


def alert_dict(a: Alert) -> dict[str, Any]:
    """An alert as the CLI and ``GET /v1/alerts`` show it."""
    return {
        "id": a.id,
        "kind": a.kind,
        "severity": a.severity,
        "subject": a.subject,
        "message": a.message,
        "payload": a.payload,
        "time": as_utc(a.created_at).isoformat(),
        "acknowledged": a.acknowledged,
        "acknowledged_by": a.acknowledged_by,
        "acknowledged_at": as_utc(a.acknowledged_at).isoformat() if a.acknowledged_at else None,
    }


def list_models(service: Service, stream: str) -> list[dict[str, Any]]:
    """Every version of a stream with its lineage and status, oldest first."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        champion = champion_version(session, record.id)
        rows = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.stream_id == record.id)
            .order_by(ModelVersion.version)
        )
        return [
            {
                "version": m.version,
                "parent": m.parent,
                "status": m.status,
                "champion": m.version == champion,
                "strategy": m.strategy,
                "params": m.params,
                "windows": m.window_ids,
                "digests": m.digests,
                "gate_report": m.gate_report,
                "created_at": m.created_at.isoformat(),
            }
            for m in rows
        ]


def list_drift(service: Service, stream: str) -> list[dict[str, Any]]:
    """Drift verdicts per window, oldest first."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        rows = session.execute(
            select(DriftReport, Window.seq)
            .join(Window, Window.id == DriftReport.window_id)
            .where(DriftReport.stream_id == record.id)
            .order_by(Window.seq, DriftReport.id)
        ).all()
        return [
            {
                "window": seq,
                "kind": r.kind,
                "detector": r.detector,
                "statistic": r.statistic,
                "p_value": r.p_value,
                "threshold": r.threshold,
                "verdict": "drift" if r.is_drift else "no drift",
                "per_group": r.per_group,
                "feature_space": r.feature_space,
                "reference_version": r.reference_version,
                "n_reference": r.n_reference,
                "n_window": r.n_window,
                "seconds": round(r.seconds, 4),
            }
            for r, seq in rows
        ]


def delete_stream(service: Service, name: str) -> bool:
    """Remove a stream with all its samples, windows, versions, reports and alerts."""
    with service.store.session() as session:
        stream = session.scalar(select(Stream).where(Stream.name == name))
        if stream is None:
            return False
        for table in (DriftReport, Alert, Champion, ModelVersion, Sample, Window):
            session.execute(delete(table).where(table.stream_id == stream.id))
        session.execute(delete(Rejection).where(Rejection.stream_name == name))
        session.delete(stream)
    service.store.streams.pop(name, None)
    shutil.rmtree(service.registry.stream_folder(name), ignore_errors=True)
    return True
