"""Traffic drift as the first sign of a change: the policy may act on it once labels come.

With ``adapt_on_traffic_drift``, an open ``drift.traffic`` incident starts the adaptation
of its groups at the first labelled window holding at least ``min_drift_group_size``
labelled samples of such a group that were served in the incident's traffic windows (the
labels of the new distribution, joined by id or picture): the learner need not wait for the
labelled tests to see the change again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.alerts.incidents import open_incident
from service.store.bulk import any_of
from service.store.schema import Traffic, TrafficWindow


@dataclass(frozen=True)
class TrafficSign:
    """An open traffic incident whose labels arrived in this window: the groups to adapt."""

    alert_id: int
    traffic_windows: list[int]
    groups: list[str]
    labelled: dict[str, int] = field(default_factory=dict)  # joined samples per group

    @property
    def reason(self) -> str:
        return (
            f"traffic drift in {', '.join(self.groups)} since traffic window "
            f"{self.traffic_windows[0]} (alert {self.alert_id})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "traffic_windows": self.traffic_windows,
            "groups": self.groups,
            "labelled": self.labelled,
        }


def traffic_sign(
    session: Session,
    stream_id: int,
    sample_ids: Sequence[str],
    groups: Sequence[str],
    min_samples: int,
) -> TrafficSign | None:
    """The open traffic incident's groups that this window's samples (``sample_ids`` with
    their ``groups``) bring at least ``min_samples`` labels of, served in its windows; None
    when there is no open incident or too few of its labels arrived. An incident that names
    no group (the whole traffic drifted) counts every group."""
    alert = open_incident(session, stream_id, "traffic")
    if alert is None:
        return None
    windows = [int(w) for w in alert.payload["incident"]["windows"]]
    named = set(alert.payload.get("groups") or [])
    group_of = dict(zip(sample_ids, groups, strict=True))
    served = session.scalars(
        select(Traffic.traffic_id)
        .join(TrafficWindow, TrafficWindow.id == Traffic.window_id)
        .where(
            Traffic.stream_id == stream_id,
            TrafficWindow.seq.in_(windows),
            any_of(session, Traffic.traffic_id, list(group_of)),
        )
    ).all()
    labelled = Counter(group_of[t] for t in served)
    ready = sorted(g for g, n in labelled.items() if n >= min_samples and (not named or g in named))
    if not ready:
        return None
    return TrafficSign(alert.id, windows, ready, dict(sorted(labelled.items())))
