"""Served accuracy: how right the answers production got were, once late labels arrived.

Computed from the stream's traffic rows joined to a label (:mod:`service.traffic.join`):
the share of them whose served class is the label, overall, per group and per version that
served them, and the label delay (seconds from the prediction to its label's arrival):
count, median, 90th percentile (linear interpolation) and maximum. It covers the traffic
kept (``traffic_capture``, within ``traffic_retention`` and ``traffic_max_rows``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.schema import Traffic, TrafficWindow, as_utc


@dataclass(frozen=True)
class Tally:
    """Joined predictions and how many of them were right."""

    n: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def add(self, right: bool) -> Tally:
        return Tally(self.n + 1, self.correct + int(right))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": self.accuracy}


@dataclass(frozen=True)
class LabelDelay:
    """Seconds from predictions to their labels: count, p50, p90, max (None when none)."""

    count: int
    p50: float | None
    p90: float | None
    max: float | None
    total: float = 0.0  # seconds summed (the metrics' summary)

    @classmethod
    def of(cls, seconds: list[float]) -> LabelDelay:
        """
        >>> LabelDelay.of([1.0, 2.0, 3.0, 10.0])
        LabelDelay(count=4, p50=2.5, p90=7.9, max=10.0, total=16.0)
        >>> LabelDelay.of([])
        LabelDelay(count=0, p50=None, p90=None, max=None, total=0.0)
        """
        if not seconds:
            return cls(0, None, None, None)
        values = np.asarray(seconds, dtype=np.float64)
        p50, p90 = (round(float(np.percentile(values, q)), 3) for q in (50, 90))
        return cls(
            len(seconds), p50, p90, round(float(values.max()), 3), round(float(values.sum()), 3)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "max": self.max}


@dataclass(frozen=True)
class ServedAccuracy:
    """A stream's served accuracy; ``to_dict`` is ``served`` in ``learnstream status
    --json`` and ``GET /v1/status``."""

    traffic: int  # traffic rows kept
    windows: dict[str, int]  # traffic windows: open, closed (not tested yet), tested
    overall: Tally
    by_group: dict[str, Tally] = field(default_factory=dict)
    by_version: dict[int, Tally] = field(default_factory=dict)
    label_delay: LabelDelay = field(default_factory=lambda: LabelDelay.of([]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "traffic": self.traffic,
            "traffic_windows": self.windows,
            "labelled": self.overall.n,
            "accuracy": self.overall.accuracy,
            "by_group": {g: t.to_dict() for g, t in sorted(self.by_group.items())},
            "by_version": {str(v): t.to_dict() for v, t in sorted(self.by_version.items())},
            "label_delay_s": self.label_delay.to_dict(),
        }


def served_accuracy(session: Session, stream_id: int) -> ServedAccuracy:
    """The served accuracy of the stream ``stream_id`` from its joined traffic rows."""
    traffic = session.scalar(
        select(func.count()).select_from(Traffic).where(Traffic.stream_id == stream_id)
    )
    states = dict(
        session.execute(
            select(TrafficWindow.state, func.count())
            .where(TrafficWindow.stream_id == stream_id)
            .group_by(TrafficWindow.state)
        )
        .tuples()
        .all()
    )
    rows = session.execute(
        select(
            Traffic.group,
            Traffic.served_version,
            Traffic.predicted,
            Traffic.label,
            Traffic.received_at,
            Traffic.labelled_at,
        ).where(Traffic.stream_id == stream_id, Traffic.label.is_not(None))
    ).all()
    overall = Tally()
    by_group: dict[str, Tally] = defaultdict(Tally)
    by_version: dict[int, Tally] = defaultdict(Tally)
    delays = []
    for row in rows:
        right = row.predicted == row.label
        overall = overall.add(right)
        group = row.group if row.group is not None else ""
        by_group[group] = by_group[group].add(right)
        by_version[row.served_version] = by_version[row.served_version].add(right)
        if row.labelled_at is not None:
            delay = (as_utc(row.labelled_at) - as_utc(row.received_at)).total_seconds()
            delays.append(max(0.0, delay))
    return ServedAccuracy(
        traffic=int(traffic or 0),
        windows={
            "open": states.get("open", 0),
            "closed": states.get("closed", 0) + states.get("testing", 0),
            "tested": states.get("tested", 0),
        },
        overall=overall,
        by_group=dict(by_group),
        by_version=dict(by_version),
        label_delay=LabelDelay.of(delays),
    )
