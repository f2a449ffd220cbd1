"""Read-side views for operators (CLI, API, dashboard): status, windows, alerts, models, drift."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.alerts.records import alert_dict
from service.context import Service
from service.pipeline.adaptation import Adaptation
from service.store.schema import (
    Alert,
    DriftReport,
    ModelVersion,
    Quarantine,
    Rejection,
    Sample,
    Stream,
    Window,
    as_utc,
    iso,
    utcnow,
)
from service.store.streams import champion_version
from service.traffic.report import traffic_drift_status
from service.traffic.served import served_accuracy

RATE_WINDOW_S = 60.0
WAITING = ("closed", "processing")  # states of a window the learner has not finished


def learner_lag(session: Session, stream_id: int | None = None) -> dict[int, float]:
    """Seconds since the oldest window still waiting for the learner closed, per stream id
    (of ``stream_id`` only when given); a stream with no window waiting is absent."""
    query = select(Window.stream_id, func.min(Window.closed_at)).where(Window.state.in_(WAITING))
    if stream_id is not None:
        query = query.where(Window.stream_id == stream_id)
    now = utcnow()
    return {
        sid: max(0.0, (now - as_utc(closed_at)).total_seconds())
        for sid, closed_at in session.execute(query.group_by(Window.stream_id))
        if closed_at is not None
    }


def _backlog(session: Session, stream_id: int) -> dict[str, float | int]:
    """What waits: the recent ingest rate, the open window, windows queued and the lag."""
    recent = session.scalar(
        select(func.count())
        .select_from(Sample)
        .where(
            Sample.stream_id == stream_id,
            Sample.received_at >= utcnow() - timedelta(seconds=RATE_WINDOW_S),
        )
    )
    waiting = session.scalar(
        select(func.coalesce(func.sum(Window.size), 0)).where(
            Window.stream_id == stream_id, Window.state == "open"
        )
    )
    queued = session.scalar(
        select(func.count()).where(Window.stream_id == stream_id, Window.state.in_(WAITING))
    )
    return {
        "ingest_rate_per_s": round((recent or 0) / RATE_WINDOW_S, 3),
        "samples_waiting": int(waiting or 0),
        "windows_queued": int(queued or 0),
        "learner_lag_s": round(learner_lag(session, stream_id).get(stream_id, 0.0), 1),
    }


def status(service: Service) -> dict[str, Any]:
    """Per stream: samples, rejections, windows by state, the champion, the backlog, the
    open adaptation, what quarantine holds and the accuracy of what was served."""
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
                "adaptation": _open_adaptation(session, stream.id),
                "quarantined": _held(session, stream.id),
                "served": served_accuracy(session, stream.id).to_dict(),
                "traffic_drift": traffic_drift_status(session, stream.id, recent=3),
            }
    return {"streams": streams}


def _held(session: Session, stream_id: int) -> dict[str, int]:
    """What the stream holds in quarantine: samples and windows."""
    held = dict(
        session.execute(
            select(Quarantine.kind, func.count())
            .where(Quarantine.stream_id == stream_id, Quarantine.status == "held")
            .group_by(Quarantine.kind)
        ).all()
    )
    return {"samples": held.get("sample", 0), "windows": held.get("window", 0)}


def _open_adaptation(session: Session, stream_id: int) -> dict[str, Any] | None:
    """The adaptation open after the latest processed window, or ``None``."""
    summary = session.scalar(
        select(Window.summary)
        .where(Window.stream_id == stream_id, Window.state == "processed")
        .order_by(Window.seq.desc())
        .limit(1)
    )
    adaptation = Adaptation.from_dict((summary or {}).get("adaptation"))
    if adaptation is None or not adaptation.is_open:
        return None
    shown = adaptation.to_dict()
    return {k: v for k, v in shown.items() if k not in ("closed", "baseline_counts", "recent")}


def list_alerts(
    service: Service, stream: str | None = None, *, include_acknowledged: bool = True
) -> list[dict[str, Any]]:
    """Alerts (of ``stream`` only when given), newest first."""
    with service.store.session() as session:
        query = select(Alert)
        if stream is not None:
            query = query.where(Alert.stream_id == service.store.stream(session, stream).id)
        if not include_acknowledged:
            query = query.where(Alert.acknowledged.is_(False))
        return [alert_dict(a) for a in session.scalars(query.order_by(Alert.id.desc()))]


def list_windows(service: Service, stream: str) -> list[dict[str, Any]]:
    """Windows of a stream, oldest first, with what processing decided."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        rows = session.scalars(
            select(Window).where(Window.stream_id == record.id).order_by(Window.seq)
        )
        return [
            {
                "seq": w.seq,
                "state": w.state,
                "size": w.size,
                "opened_at": iso(w.opened_at),
                "closed_at": iso(w.closed_at),
                "processed_at": iso(w.processed_at),
                "champion_version": w.served_by,
                "drifted": w.drifted,
                "summary": w.summary,
            }
            for w in rows
        ]


def list_models(service: Service, stream: str) -> list[dict[str, Any]]:
    """Every version of a stream with its lineage and status, oldest first; ``windows`` are
    the numbers (``seq``) of the windows it was trained on, as every other view names them;
    ``trained_on_deleted`` the ids of the deletions of samples it was trained on."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        champion = champion_version(session, record.id)
        numbers = select(Window.id, Window.seq).where(Window.stream_id == record.id)
        seq_of: dict[int, int] = dict(session.execute(numbers).tuples().all())
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
                "windows": sorted(seq_of[int(w)] for w in m.window_ids if int(w) in seq_of),
                "digests": m.digests,
                "gate_report": m.gate_report,
                "created_at": m.created_at.isoformat(),
                "trained_on_deleted": list(m.trained_on_deleted or []),
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
