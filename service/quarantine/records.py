"""Quarantine records: holding samples and windows out of learning, listing them, and an
operator's release (back in) or confirmation (out for good).

A held sample is left out of training (so of every replay buffer built from it), of the
gate's holdout and of drift references (``Sample.quarantined``, read by
:func:`service.store.batches.load_batch`); a held window is left out of later gates,
references and training (``Window.quarantined``). The flags and the ``quarantine`` rows
change in one transaction, so they always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.errors import InvalidRequest
from service.store.engine import Store
from service.store.schema import BY_LENGTH, Quarantine, Sample, Stream, Window, iso, utcnow

Status = Literal["held", "released", "confirmed"]
STATUSES: tuple[str, ...] = ("held", "released", "confirmed")
ALL = "all"  # a listing of every status
MAX_BY = BY_LENGTH

UNKNOWN_STATUS = "status: must be one of held, released, confirmed or all, got {status!r}"
NO_BY = "by: say who decides (an operator's name)"
LONG_BY = f"by: at most {MAX_BY} characters"
NOTHING_NAMED = "name the samples (ids) or windows to decide on, or all of them"


@dataclass(frozen=True)
class Flag:
    """A sample to hold: its row, the label given, the class believed and its score."""

    row: int
    given: int
    believed: int
    score: float


def hold_samples(
    session: Session, stream_id: int, window_id: int, flags: Sequence[Flag], reason: str
) -> int:
    """Hold the flagged samples of a window; a sample that already has a quarantine record
    (a retried window, or an operator's decision) keeps it. Returns how many were held."""
    rows = [f.row for f in flags]
    if not rows:
        return 0
    known = set(
        session.scalars(select(Quarantine.sample_row).where(Quarantine.sample_row.in_(rows)))
    )
    new = [f for f in flags if f.row not in known]
    session.add_all(
        Quarantine(
            stream_id=stream_id,
            kind="sample",
            sample_row=f.row,
            window_id=window_id,
            status="held",
            reason=reason,
            given=f.given,
            believed=f.believed,
            score=round(float(f.score), 6),
        )
        for f in new
    )
    if new:
        session.execute(
            update(Sample).where(Sample.id.in_([f.row for f in new])).values(quarantined=True)
        )
    return len(new)


def hold_window(session: Session, stream_id: int, window_id: int, reason: str) -> bool:
    """Hold a whole window out of later gates, references and training (once)."""
    known = session.scalar(
        select(Quarantine.id).where(Quarantine.window_id == window_id, Quarantine.kind == "window")
    )
    if known is not None:
        return False
    session.add(
        Quarantine(
            stream_id=stream_id, kind="window", window_id=window_id, status="held", reason=reason
        )
    )
    session.execute(update(Window).where(Window.id == window_id).values(quarantined=True))
    return True


def drop_window_hold(session: Session, window_id: int) -> None:
    """Undo :func:`hold_window` as if it never happened: no record, the window not held."""
    session.execute(
        delete(Quarantine).where(Quarantine.window_id == window_id, Quarantine.kind == "window")
    )
    session.execute(update(Window).where(Window.id == window_id).values(quarantined=False))


def score_text(score: float | None) -> str:
    """A held sample's score as the CLI and the dashboard show it.

    >>> score_text(0.01234), score_text(None)
    ('0.012', '-')
    """
    return f"{score:.3f}" if score is not None else "-"


def flags_from(
    row_ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    believed: np.ndarray,
    scores: np.ndarray,
) -> list[Flag]:
    """The samples of a batch where ``mask`` is true, as flags."""
    return [
        Flag(int(row_ids[i]), int(labels[i]), int(believed[i]), float(scores[i]))
        for i in np.flatnonzero(mask)
    ]


def _entry(q: Quarantine, sample: Sample | None, window: Window, classes: list[str]) -> dict:
    def name(index: int | None) -> str | None:
        return classes[index] if index is not None and 0 <= index < len(classes) else None

    return {
        "id": q.id,
        "kind": q.kind,
        "status": q.status,
        "sample": sample.sample_id if sample is not None else None,
        "group": sample.group if sample is not None else None,
        "split": sample.split if sample is not None else None,
        "window": window.seq,
        "given": name(q.given),
        "believed": name(q.believed),
        "score": q.score,
        "reason": q.reason,
        "created_at": iso(q.created_at),
        "decided_by": q.decided_by,
        "decided_at": iso(q.decided_at),
        "note": q.note,
    }


def list_quarantine(
    store: Store,
    stream: str,
    status: str | None = "held",
    limit: int = 1000,
    *,
    kind: Literal["sample", "window"] | None = None,
) -> list[dict[str, Any]]:
    """A stream's quarantine records of one ``status`` (every status with ``"all"`` or
    None), and of one ``kind`` if given, newest first, the ``limit`` newest at most."""
    if status == ALL:
        status = None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(UNKNOWN_STATUS.format(status=status))
    with store.session() as session:
        record = store.stream(session, stream)
        query = (
            select(Quarantine, Sample, Window)
            .join(Window, Window.id == Quarantine.window_id)
            .outerjoin(Sample, Sample.id == Quarantine.sample_row)
            .where(Quarantine.stream_id == record.id)
        )
        if status is not None:
            query = query.where(Quarantine.status == status)
        if kind is not None:
            query = query.where(Quarantine.kind == kind)
        rows = session.execute(query.order_by(Quarantine.id.desc()).limit(limit)).all()
        return [_entry(q, s, w, list(record.classes)) for q, s, w in rows]


def quarantine_counts(store: Store, stream: str) -> dict[str, dict[str, int]]:
    """How many of a stream's records are in each status, per kind (``sample``, ``window``);
    every status and kind present, zero where none."""
    counts = {status: {"sample": 0, "window": 0} for status in STATUSES}
    with store.session() as session:
        record = store.stream(session, stream)
        rows = session.execute(
            select(Quarantine.status, Quarantine.kind, func.count())
            .where(Quarantine.stream_id == record.id)
            .group_by(Quarantine.status, Quarantine.kind)
        ).all()
    for status, kind, n in rows:
        counts.setdefault(status, {})[kind] = int(n)
    return counts


@dataclass(frozen=True)
class Decided:
    """What an operator's release or confirmation changed."""

    action: str
    samples: list[str]
    windows: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            self.action: len(self.samples) + len(self.windows),
            "samples": self.samples,
            "windows": self.windows,
        }


def _held(
    session: Session,
    stream: Stream,
    ids: Sequence[str],
    windows: Sequence[int],
    everything: bool,
) -> list[tuple[Quarantine, Sample | None, Window]]:
    query = (
        select(Quarantine, Sample, Window)
        .join(Window, Window.id == Quarantine.window_id)
        .outerjoin(Sample, Sample.id == Quarantine.sample_row)
        .where(Quarantine.stream_id == stream.id, Quarantine.status == "held")
    )
    if not everything:
        query = query.where(
            (Sample.sample_id.in_(list(ids)))
            | ((Quarantine.kind == "window") & Window.seq.in_(list(windows)))
        )
    return list(session.execute(query.with_for_update(of=Quarantine)).tuples().all())


def decide(
    store: Store,
    stream: str,
    action: Literal["released", "confirmed"],
    *,
    ids: Sequence[str] = (),
    windows: Sequence[int] = (),
    everything: bool = False,
    by: str,
    note: str | None = None,
) -> Decided:
    """Release (back into learning) or confirm (out for good) held samples, by sample id, and
    held windows, by number; ``everything``: all that the stream holds. Records who and when."""
    if not by or not by.strip():
        raise InvalidRequest(NO_BY)
    if len(by) > MAX_BY:
        raise InvalidRequest(LONG_BY)
    if not everything and not ids and not windows:
        raise InvalidRequest(NOTHING_NAMED)
    with store.session() as session:
        record = store.stream(session, stream)
        found = _held(session, record, ids, windows, everything)
        now = utcnow()
        for q, _, _ in found:
            q.status, q.decided_by, q.decided_at, q.note = action, by, now, note
        if action == "released":
            sample_rows = [q.sample_row for q, _, _ in found if q.sample_row is not None]
            window_ids = [w.id for q, _, w in found if q.kind == "window"]
            if sample_rows:
                session.execute(
                    update(Sample).where(Sample.id.in_(sample_rows)).values(quarantined=False)
                )
            if window_ids:
                session.execute(
                    update(Window).where(Window.id.in_(window_ids)).values(quarantined=False)
                )
        return Decided(
            action,
            sorted(s.sample_id for q, s, _ in found if s is not None),
            sorted(w.seq for q, _, w in found if q.kind == "window"),
        )
