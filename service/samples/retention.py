"""Retention: each stream keeps samples up to an age and a count; the sweep deletes the rest.

``retention_max_age`` (seconds since a sample was received) and ``retention_max_samples``
(samples a stream keeps at most) are settings a stream may set for itself; unset, a stream
keeps everything. The sweep (``learnstream.sweep``, every ``sweep_interval``; or
``learnstream samples retain``) deletes what is beyond them, oldest first, through
:func:`service.samples.deletion.delete_samples` (``by="retention"``), so lineage, purged
buffers and the audit record are as for an operator's deletion.

Some samples are never deleted, whatever the limits: those of windows the learner has not
finished (open, closed, processing), of the latest ``gate_windows`` processed windows (the
gate's holdout and the candidates' training data) and of the windows the drift reference is
drawn from. When the limits can only be met by deleting those, they are kept and the
deletion's record says so (``kept``: how many samples beyond which limit, in which windows);
with nothing else to delete, the sweep only logs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.context import Service
from service.pipeline.eras import latest_eras
from service.pipeline.reference import reference_window_ids
from service.samples.deletion import Criteria, DeletionResult, delete_samples
from service.store.schema import Sample, Stream, Window, as_utc, utcnow
from service.streams.configuration import StreamConfigInvalid, settings_for

log = logging.getLogger(__name__)

RETENTION = "retention"
KEPT_WHY = (
    "in windows the learner has not finished, the gate's latest gate_windows windows or the "
    "drift reference's windows"
)


@dataclass(frozen=True)
class RetentionPlan:
    """What retention deletes in one stream now (database row ids, oldest first), the limits
    it applied, and what it had to keep beyond them (None: nothing)."""

    stream: str
    rows: list[int]
    limits: dict[str, Any]
    kept: dict[str, Any] | None

    @property
    def reason(self) -> str:
        parts = []
        if self.limits.get("max_age") is not None:
            parts.append(f"older than {self.limits['max_age']:g} s")
        if self.limits.get("max_samples") is not None:
            parts.append(f"beyond {self.limits['max_samples']} samples")
        return "retention: " + " or ".join(parts)


def protected_windows(session: Session, stream_id: int, settings: Settings) -> set[int]:
    """Ids of the windows whose samples retention keeps (see the module's docstring)."""
    unfinished = session.scalars(
        select(Window.id).where(Window.stream_id == stream_id, Window.state != "processed")
    ).all()
    processed = session.execute(
        select(Window.id, Window.quarantined)
        .where(Window.stream_id == stream_id, Window.state == "processed")
        .order_by(Window.seq.desc())
    ).all()
    # The gate's windows: the latest processed ones that quarantine does not hold (a held
    # window is skipped by the gate, which then reaches one window further back).
    latest = [int(w.id) for w in processed if not w.quarantined][: settings.gate_windows]
    next_seq = (
        session.scalar(select(func.max(Window.seq)).where(Window.stream_id == stream_id)) or 0
    ) + 1
    _, eras = latest_eras(session, stream_id)
    reference = reference_window_ids(session, stream_id, next_seq, eras, settings.reference_size)
    return {int(w) for w in unfinished} | set(latest) | {int(w) for w in reference}


def plan_retention(session: Session, stream: Stream, settings: Settings) -> RetentionPlan | None:
    """What retention would delete in ``stream`` now; None when it sets no limit."""
    max_age, max_samples = settings.retention_max_age, settings.retention_max_samples
    if max_age is None and max_samples is None:
        return None
    protected = protected_windows(session, stream.id, settings)
    rows = session.execute(
        select(Sample.id, Sample.window_id, Sample.received_at)
        .where(Sample.stream_id == stream.id)
        .order_by(Sample.seq)
    ).all()
    chosen: list[int] = []
    kept_windows: set[int] = set()
    kept: dict[str, Any] = {}
    if max_age is not None:
        cutoff = utcnow() - timedelta(seconds=max_age)
        old = [r for r in rows if as_utc(r.received_at) < cutoff]
        chosen = [int(r.id) for r in old if int(r.window_id) not in protected]
        over = [r for r in old if int(r.window_id) in protected]
        if over:
            kept["max_age"] = {"limit_s": max_age, "older_samples_kept": len(over)}
            kept_windows |= {int(r.window_id) for r in over}
    if max_samples is not None and len(rows) - len(chosen) > max_samples:
        excess = len(rows) - len(chosen) - max_samples
        taken = set(chosen)
        more = [
            int(r.id) for r in rows if int(r.window_id) not in protected and int(r.id) not in taken
        ][:excess]
        chosen += more
        if len(more) < excess:
            kept["max_samples"] = {"limit": max_samples, "samples_over": excess - len(more)}
            kept_windows |= {int(r.window_id) for r in rows if int(r.window_id) in protected}
    if kept:
        numbers = dict(
            session.execute(
                select(Window.id, Window.seq).where(Window.id.in_(sorted(kept_windows)))
            )
            .tuples()
            .all()
        )
        kept["windows"] = sorted(numbers.values())
        kept["why"] = KEPT_WHY
    limits = {"max_age": max_age, "max_samples": max_samples}
    return RetentionPlan(stream.name, chosen, limits, kept or None)


def apply_retention(
    service: Service, streams: list[str] | None = None
) -> dict[str, DeletionResult]:
    """Apply every stream's retention (of ``streams`` only, when given) through the deletion
    path; the deletions made, by stream. One stream's failure is logged and does not stop
    the others."""
    with service.store.session() as session:
        query = select(Stream).order_by(Stream.name)
        if streams is not None:
            query = query.where(Stream.name.in_(streams))
        records = list(session.scalars(query))
    done: dict[str, DeletionResult] = {}
    for stream in records:
        try:
            in_force = settings_for(service.settings, stream)
            with service.store.session() as session:
                plan = plan_retention(session, stream, in_force)
            if plan is None:
                continue
            if not plan.rows:
                if plan.kept:
                    log.warning(
                        "retention kept samples beyond its limits",
                        extra={"stream": stream.name, "kept": plan.kept},
                    )
                continue
            criteria = Criteria(rows=tuple(plan.rows), retention=plan.limits)
            done[stream.name] = delete_samples(
                service, stream.name, criteria, by=RETENTION, reason=plan.reason, kept=plan.kept
            )
        except StreamConfigInvalid as exc:
            log.error("retention skips a stream: %s", exc, extra={"stream": stream.name})
        except Exception:
            log.exception("retention failed for a stream", extra={"stream": stream.name})
    return done
