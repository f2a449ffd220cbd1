"""``labels.suspect`` incidents: a group whose labels the screen found wrong beyond chance.

One incident per stream and group: it opens with the first window in which the group is
suspect, is extended by each following suspect window, and is closed by the first window in
which the group was screened and not suspect. Windows in which the group was not screened
(its inputs drifted, too few samples) neither extend nor close it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.alerts import records as alerts
from service.pipeline.screen import GroupScreen, Screen
from service.store.schema import Alert

KIND: alerts.AlertKind = "labels.suspect"


def suspect_subject(stream: str, group: str) -> str:
    """The subject of one group's ``labels.suspect`` incidents."""
    return f"{stream} labels of group {group}"


def _open_incident(session: Session, stream_id: int, subject: str) -> Alert | None:
    latest = session.scalar(
        select(Alert)
        .where(Alert.stream_id == stream_id, Alert.kind == KIND, Alert.subject == subject)
        .order_by(Alert.id.desc())
        .limit(1)
        .with_for_update()
    )
    incident = (latest.payload or {}).get("incident") if latest is not None else None
    return latest if incident and incident.get("open") else None


def _entry(window: int, verdict: GroupScreen, quarantined: int) -> dict[str, object]:
    return {
        "window": window,
        "flagged": verdict.flagged,
        "n": verdict.n,
        "expected": verdict.expected,
        "p_value": verdict.p_value,
        "quarantined": quarantined,
    }


def record_screen(
    session: Session,
    *,
    stream_id: int,
    stream: str,
    window: int,
    screen: Screen,
    quarantined: dict[str, int],
) -> list[Alert]:
    """Open, extend or close each group's ``labels.suspect`` incident for this window's screen
    (``quarantined``: samples newly held per group); the incidents' alerts."""
    touched = []
    for group, verdict in sorted(screen.groups.items()):
        if verdict.skipped is not None:
            continue
        subject = suspect_subject(stream, group)
        current = _open_incident(session, stream_id, subject)
        if current is not None and window in current.payload["incident"]["windows"]:
            touched.append(current)  # a retried window: already recorded
            continue
        if not verdict.suspect:
            if current is not None:
                payload = dict(current.payload)
                payload["incident"] = {
                    **payload["incident"],
                    "open": False,
                    "closed_by_window": window,
                }
                current.payload = payload
            continue
        entry = _entry(window, verdict, quarantined.get(group, 0))
        if current is None:
            share = verdict.flagged / max(verdict.n, 1)
            touched.append(
                alerts.raise_alert(
                    session,
                    stream_id=stream_id,
                    kind=KIND,
                    severity="warning",
                    subject=subject,
                    message=(
                        f"window {window}: {verdict.flagged} of group {group}'s {verdict.n} "
                        f"labels look wrong ({share:.0%}, against {verdict.expected:.0%} of its "
                        f"reference samples, p={verdict.p_value:.2g} < {screen.threshold:.2g}); "
                        f"{entry['quarantined']} quarantined (learnstream quarantine list)"
                    ),
                    payload={
                        "window": window,
                        "group": group,
                        "groups": [group],
                        "incident": {"windows": [window], "open": True, "closed_by_window": None},
                        "windows": [entry],
                    },
                )
            )
            continue
        payload = dict(current.payload)
        payload["incident"] = {
            **payload["incident"],
            "windows": [*payload["incident"]["windows"], window],
        }
        payload["windows"] = [*payload["windows"], entry]
        current.payload = payload
        touched.append(current)
    return touched
