"""What the operators' dashboard and the stream report show, read from the store as plain data.

:func:`stream_data` gathers one stream's windows (prequential accuracy per group and what
processing decided), drift verdicts, model versions with their gate reports, alerts,
drift incidents and what quarantine holds into one JSON-able dict. The dashboard page and
``learnstream report`` draw their figures from it, and ``learnstream report --json`` prints
it, so the page, the file and the JSON always agree. Pixels are not part of it:
:func:`load_samples` reads them for thumbnails (held samples' too) and explanations.

Drift alerts are read defensively: an incident alert carries ``incident`` (``windows``,
``open``), ``group``, ``p_values`` and ``shifted_samples`` in its payload, while older
alerts name one ``window`` and ``groups`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from service.alerts.incidents import incident_title
from service.context import Service
from service.quarantine.records import list_quarantine, quarantine_counts
from service.queries.listings import list_alerts, list_drift, list_models
from service.store.images import read_pixels
from service.store.schema import Alert, Sample, Stream, Window, iso, utcnow
from service.store.streams import champion_version
from service.streams.configuration import settings_for
from service.traffic.report import traffic_drift_status
from service.traffic.served import served_accuracy

SAMPLES_PER_INCIDENT = 8
HELD_SAMPLES_SHOWN = 48  # the newest held samples the page and the report show
HELD_WINDOWS_SHOWN = 48
HELD_SAMPLE_FIELDS = ("id", "sample", "group", "window", "given", "believed", "score", "reason")


@dataclass(frozen=True)
class SampleImage:
    """One stored sample with its pixels: ``pixels`` is ``uint8 (C, H, W)``."""

    sample_id: str
    label: str
    label_index: int
    group: str
    window: int
    split: str
    pixels: np.ndarray


def streams_overview(service: Service) -> list[dict[str, Any]]:
    """Every stream with its champion, windows processed, open alerts and last window."""
    with service.store.session() as session:
        streams = list(session.scalars(select(Stream).order_by(Stream.name)))
        rows = []
        for stream in streams:
            processed = session.execute(
                select(func.count(), func.max(Window.processed_at)).where(
                    Window.stream_id == stream.id, Window.state == "processed"
                )
            ).one()
            rows.append(
                {
                    "stream": stream.name,
                    "champion": champion_version(session, stream.id),
                    "windows_processed": int(processed[0]),
                    "last_processed": iso(processed[1], "seconds"),
                    "open_alerts": session.scalar(
                        select(func.count())
                        .select_from(Alert)
                        .where(Alert.stream_id == stream.id, Alert.acknowledged.is_(False))
                    ),
                }
            )
    return rows


def stream_data(service: Service, stream: str) -> dict[str, Any]:
    """Everything the dashboard and the report show of one stream; raises StreamNotFound."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        classes = [str(c) for c in record.classes]
        windows = _windows(session, record.id)
        champion = champion_version(session, record.id)
        traffic = {
            **traffic_drift_status(session, record.id),
            "served": served_accuracy(session, record.id).to_dict(),
        }
    versions = [_version(m) for m in list_models(service, stream)]
    alerts = list_alerts(service, stream)
    s = settings_for(service.settings, record)
    return {
        "stream": stream,
        "generated_at": utcnow().isoformat(timespec="seconds"),
        "classes": classes,
        "champion": champion,
        "groups": _groups(windows),
        "settings": {
            "drift_p_value": s.drift_p_value,
            "drift_detector": s.drift_detector,
            "concept_detector": s.concept_detector,
            "gate_tolerance": s.gate_tolerance,
            "max_gap_increase": s.max_gap_increase,
            "min_group_size": s.min_group_size,
            "update_policy": s.update_policy,
            "strategy": s.strategy,
        },
        "windows": windows,
        "drift": list_drift(service, stream),
        "versions": versions,
        "alerts": alerts,
        "incidents": incidents(alerts),
        "quarantine": quarantine(service, stream),
        "traffic": traffic,
    }


def quarantine(service: Service, stream: str) -> dict[str, Any]:
    """What the stream holds out of learning: counts per status and kind, the newest
    ``HELD_SAMPLES_SHOWN`` held samples (with group, given and believed class and score) and
    the newest ``HELD_WINDOWS_SHOWN`` held windows (with their reason)."""
    counts = quarantine_counts(service.store, stream)
    samples = list_quarantine(service.store, stream, "held", HELD_SAMPLES_SHOWN, kind="sample")
    windows = list_quarantine(service.store, stream, "held", HELD_WINDOWS_SHOWN, kind="window")
    return {
        "counts": counts,
        "held_samples": counts["held"]["sample"],
        "held_windows": counts["held"]["window"],
        "released": sum(counts["released"].values()),
        "confirmed": sum(counts["confirmed"].values()),
        "samples": [{k: q[k] for k in HELD_SAMPLE_FIELDS} for q in samples],
        "windows": [{k: q[k] for k in ("id", "window", "reason", "created_at")} for q in windows],
    }


def _windows(session: Session, stream_id: int) -> list[dict[str, Any]]:
    """Windows oldest first, with the decisions their processing stored in ``summary``."""
    rows = session.scalars(select(Window).where(Window.stream_id == stream_id).order_by(Window.seq))
    out = []
    for w in rows:
        summary = w.summary or {}
        out.append(
            {
                "seq": w.seq,
                "state": w.state,
                "size": w.size,
                "processed_at": iso(w.processed_at, "seconds"),
                "champion": w.served_by,
                "drifted": w.drifted,
                "accuracy": dict(summary.get("prequential_accuracy") or {}),
                "drift": dict(summary.get("drift") or {}),
                "drifted_groups": dict(summary.get("drifted_groups") or {}),
                "candidate": summary.get("candidate"),
                "promoted": summary.get("promoted"),
                "rejected": summary.get("rejected"),
                "gate_passed": summary.get("gate_passed"),
                "gate_reasons": list(summary.get("gate_reasons") or []),
                "error": summary.get("error"),
                "note": summary.get("note") or "",
            }
        )
    return out


def _groups(windows: list[dict[str, Any]]) -> list[str]:
    """Group names seen in the prequential accuracies, sorted."""
    return sorted({g for w in windows for g in w["accuracy"] if g != "overall"})


def _version(model: dict[str, Any]) -> dict[str, Any]:
    """A version with its windows (numbers, as listed) and its gate report made plain."""
    return {
        "version": model["version"],
        "parent": model["parent"],
        "status": model["status"],
        "champion": model["champion"],
        "strategy": model["strategy"],
        "windows": model["windows"],
        "created_at": model["created_at"][:19],
        "gate": gate_summary(model["gate_report"]),
    }


def gate_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The decision a gate report records, in one shape whatever wrote it.

    ``kind`` is ``gate`` (a comparison with the champion), ``bootstrap`` (version 1's
    accuracy check), ``error`` (the update failed) or ``other``.
    """
    if not report:
        return None
    if report.get("bootstrap"):
        return {
            "kind": "bootstrap",
            "passed": None,
            "accuracy": report.get("accuracy"),
            "n": report.get("n"),
            "reasons": [],
            "groups": [],
            "windows": [],
        }
    if "error" in report and "groups" not in report:
        return {
            "kind": "error",
            "passed": False,
            "reasons": [str(report["error"])],
            "groups": [],
            "windows": [],
        }
    if "groups" not in report:
        return {
            "kind": "other",
            "passed": report.get("passed"),
            "reasons": [],
            "groups": [],
            "windows": [],
        }
    return {
        "kind": "gate",
        "passed": report.get("passed"),
        "n": report.get("n"),
        "reasons": list(report.get("reasons") or []),
        "groups": [_comparison(c) for c in report.get("groups") or []],
        "windows": [_comparison(c) for c in report.get("windows") or []],
        "champion_gap": report.get("champion_gap"),
        "candidate_gap": report.get("candidate_gap"),
        "gap_failed": report.get("gap_failed"),
        "worst_group": report.get("worst_group"),
    }


def _comparison(c: dict[str, Any]) -> dict[str, Any]:
    """One slice of a gate report: champion and candidate accuracy, difference, interval."""
    interval = c.get("interval") or (None, None)
    return {
        "subject": c.get("subject"),
        "n": c.get("n"),
        "champion": c.get("champion"),
        "candidate": c.get("candidate"),
        "difference": c.get("difference"),
        "low": interval[0],
        "high": interval[1],
        "p_value": c.get("p_value"),
        "verdict": c.get("verdict"),
        "reason": c.get("reason"),
    }


def _ints(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [int(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]


def incidents(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drift alerts as incidents, newest first, whichever payload shape they carry."""
    out = []
    for a in alerts:
        if not str(a["kind"]).startswith("drift."):
            continue
        payload: dict[str, Any] = a["payload"] if isinstance(a.get("payload"), dict) else {}
        incident: dict[str, Any] = (
            payload["incident"] if isinstance(payload.get("incident"), dict) else {}
        )
        windows = _ints(incident.get("windows"))
        if not windows and isinstance(payload.get("window"), int):
            windows = [payload["window"]]
        group = payload.get("group")
        if "group" not in payload:
            named = payload.get("groups")
            group = named[0] if isinstance(named, list) and len(named) == 1 else None
        p_values = [
            float(p) for p in payload.get("p_values") or [] if isinstance(p, int | float)
        ] or (
            [float(payload["p_value"])] if isinstance(payload.get("p_value"), int | float) else []
        )
        shifted = payload.get("shifted_samples")
        shifted = [s for s in shifted if isinstance(s, str)] if isinstance(shifted, list) else []
        kind = str(a["kind"]).removeprefix("drift.")
        groups = [g for g in payload.get("groups") or [] if isinstance(g, str)]
        if not groups and isinstance(group, str):
            groups = [group]
        source = payload.get("shifted_from")
        out.append(
            {
                "alert": a["id"],
                "kind": kind,
                "title": incident_title(kind, groups),
                "message": a["message"],
                "time": a["time"],
                "windows": windows,
                "open": incident.get("open") if isinstance(incident.get("open"), bool) else None,
                "group": group if isinstance(group, str) else None,
                "groups": groups,
                "p_values": p_values,
                "threshold": payload.get("threshold"),
                "acknowledged": a["acknowledged"],
                "shifted_samples": shifted[:SAMPLES_PER_INCIDENT],
                "shifted_from": _shifted_from(source),
            }
        )
    return out


def _shifted_from(value: Any) -> dict[str, Any] | None:
    """The window and groups the named shifted samples come from (null for older alerts)."""
    if not isinstance(value, dict) or not isinstance(value.get("window"), int):
        return None
    groups = value.get("groups")
    return {
        "window": value["window"],
        "groups": [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else [],
    }


def load_samples(service: Service, stream: str, sample_ids: list[str]) -> list[SampleImage]:
    """The stored samples named by ``sample_ids`` (in that order; unknown ids are skipped),
    quarantined or not: the page shows held samples too."""
    if not sample_ids:
        return []
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        rows = session.execute(
            _sample_query(record).where(Sample.sample_id.in_(list(sample_ids)))
        ).all()
        return _by_id(_images(session, record, rows), sample_ids)


def window_samples(
    service: Service,
    stream: str,
    windows: list[int],
    *,
    group: str | None = None,
    split: str | None = None,
    limit: int | None = SAMPLES_PER_INCIDENT,
) -> list[SampleImage]:
    """Samples of the windows numbered ``windows`` (optionally one group and split), in order."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        query = _sample_query(record).where(Window.seq.in_(windows))
        if group is not None:
            query = query.where(Sample.group == group)
        if split is not None:
            query = query.where(Sample.split == split)
        query = query.order_by(Sample.seq)
        if limit is not None:
            query = query.limit(limit)
        return _images(session, record, session.execute(query).all())


def incident_samples(
    service: Service, stream: str, incident: dict[str, Any]
) -> tuple[list[SampleImage], str]:
    """The samples to show for an incident and where they come from.

    ``shifted``: the most shifted samples the alert names. ``window``: an older alert
    names none, so the first samples of its (last) window in its group stand in.
    """
    if incident["shifted_samples"]:
        return load_samples(service, stream, incident["shifted_samples"]), "shifted"
    if not incident["windows"]:
        return [], "none"
    return (
        window_samples(service, stream, incident["windows"][-1:], group=incident["group"]),
        "window",
    )


def _sample_query(record: Stream) -> Select[str, int, str, str, bytes | None, str | None, int]:
    return (
        select(
            Sample.sample_id,
            Sample.label,
            Sample.group,
            Sample.split,
            Sample.pixels,
            Sample.content_digest,
            Window.seq,
        )
        .join(Window, Window.id == Sample.window_id)
        .where(Sample.stream_id == record.id)
    )


def _images(
    session: Session,
    record: Stream,
    rows: Sequence[Row[str, int, str, str, bytes | None, str | None, int]],
) -> list[SampleImage]:
    shape = (record.channels, record.size, record.size)
    classes = [str(c) for c in record.classes]
    stored = read_pixels(session, [(r.pixels, r.content_digest) for r in rows])
    return [
        SampleImage(
            sample_id=r.sample_id,
            label=classes[r.label] if 0 <= r.label < len(classes) else str(r.label),
            label_index=int(r.label),
            group=r.group,
            window=int(r.seq),
            split=r.split,
            pixels=np.frombuffer(pixels, dtype=np.uint8).reshape(shape),
        )
        for r, pixels in zip(rows, stored, strict=True)
    ]


def _by_id(images: list[SampleImage], order: list[str]) -> list[SampleImage]:
    found = {i.sample_id: i for i in images}
    return [found[s] for s in dict.fromkeys(order) if s in found]
