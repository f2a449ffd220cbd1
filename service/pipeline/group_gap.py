"""``fairness.gap`` for the champion: its groups drifted apart, whatever the gate did.

On each window the champion's best-to-worst prequential gap between groups (those with at
least ``min_group_size`` samples) gets a one-sided lower confidence bound (normal
approximation of the difference of two proportions). When that bound exceeds
``champion_gap_max`` for ``champion_gap_windows`` windows in a row, one incident-style
alert opens; each further such window extends it, and the first window below closes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import norm
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.alerts import records as alerts
from service.pipeline.adaptation import Counts
from service.store.schema import Alert

KIND: alerts.AlertKind = "fairness.gap"


@dataclass(frozen=True)
class GapCheck:
    """The champion's group gap on one window and how many windows in a row it stood out."""

    best: str | None
    worst: str | None
    gap: float
    lower: float
    run: int  # consecutive windows whose lower bound exceeded the limit, this one included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_gap(
    counts: Counts, previous_run: int, *, limit: float, confidence: float, min_n: int
) -> GapCheck:
    """The gap of the best and worst group with ``min_n`` samples, with its lower bound.

    >>> c = check_gap({"A": (95, 100), "B": (60, 100), "C": (5, 10)}, 2,
    ...               limit=0.1, confidence=0.95, min_n=30)
    >>> (c.best, c.worst, round(c.gap, 2), round(c.lower, 2), c.run)
    ('A', 'B', 0.35, 0.26, 3)
    """
    rates = {g: k / n for g, (k, n) in counts.items() if n >= min_n}
    if len(rates) < 2:
        return GapCheck(None, None, 0.0, 0.0, 0)
    best, worst = max(rates, key=rates.__getitem__), min(rates, key=rates.__getitem__)
    p1, n1, p2, n2 = rates[best], counts[best][1], rates[worst], counts[worst][1]
    se = (p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) ** 0.5
    gap = p1 - p2
    lower = gap - float(norm.ppf(confidence)) * se
    return GapCheck(best, worst, gap, lower, previous_run + 1 if lower > limit else 0)


def gap_subject(stream: str) -> str:
    """The subject of a stream's champion-gap incidents (other ``fairness.gap`` alerts differ)."""
    return f"{stream} champion group gap"


def _open_alert(session: Session, stream_id: int, stream: str) -> Alert | None:
    latest = session.scalar(
        select(Alert)
        .where(
            Alert.stream_id == stream_id, Alert.kind == KIND, Alert.subject == gap_subject(stream)
        )
        .order_by(Alert.id.desc())
        .limit(1)
        .with_for_update()
    )
    incident = (latest.payload or {}).get("incident") if latest is not None else None
    return latest if incident and incident.get("open") else None


def record_gap(
    session: Session,
    *,
    stream_id: int,
    stream: str,
    champion: int,
    window: int,
    check: GapCheck,
    windows_needed: int,
    limit: float,
) -> Alert | None:
    """Open, extend or close the champion's gap incident for this window's check."""
    current = _open_alert(session, stream_id, stream)
    if current is not None and window in current.payload["incident"]["windows"]:
        return current  # a retried window: already recorded
    if check.run < windows_needed:
        if current is not None and check.run == 0:
            payload = dict(current.payload)
            payload["incident"] = {**payload["incident"], "open": False, "closed_by_window": window}
            current.payload = payload
        return current
    entry = {"window": window, "gap": round(check.gap, 4), "lower": round(check.lower, 4)}
    if current is None:
        first = window - windows_needed + 1
        return alerts.raise_alert(
            session,
            stream_id=stream_id,
            kind=KIND,
            severity="warning",
            subject=gap_subject(stream),
            message=(
                f"the champion v{champion}'s accuracy gap between groups {check.best} and "
                f"{check.worst} is above {limit} (lower bound {check.lower:.3f}) for "
                f"{windows_needed} windows, from window {first}"
            ),
            payload={
                "window": window,
                "incident": {"windows": [window], "open": True, "closed_by_window": None},
                "groups": [check.worst],
                "best": check.best,
                "champion": champion,
                "limit": limit,
                "gaps": [entry],
            },
        )
    payload = dict(current.payload)
    payload["incident"] = {
        **payload["incident"],
        "windows": [*payload["incident"]["windows"], window],
    }
    payload["gaps"] = [*payload["gaps"], entry]
    payload["groups"] = sorted({*payload["groups"], check.worst})
    current.payload = payload
    return current
