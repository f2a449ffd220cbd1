"""``labels.suspect`` incidents from hand-made screens, on SQLite and PostgreSQL: one per group,
opened by a suspect window, extended by the next, untouched by a window in which the group was
not screened, closed by a screened window in which it is not suspect; a retried window is not
recorded twice."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select

from service.context import Service
from service.ingest.samples import get_or_create_stream
from service.pipeline.screen import NOT_SCREENED_DRIFT, GroupScreen, Screen
from service.quarantine.suspect import KIND, record_screen, suspect_subject
from service.store.schema import Alert

THRESHOLD = 0.005
SUSPECT = GroupScreen(100, 40, 0.06, 1e-20, True)
CLEAN = GroupScreen(100, 5, 0.06, 0.62, False)
SKIPPED = GroupScreen(100, skipped=NOT_SCREENED_DRIFT)


def _screen(**groups: GroupScreen) -> Screen:
    return Screen(groups, THRESHOLD, np.zeros(0, dtype=bool), np.ones(0), np.zeros(0))


def _record(service: Service, window: int, screen: Screen, **held: int) -> list[int]:
    """Record ``screen`` as window number ``window``'s; the ids of the incidents it touched."""
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    with service.store.session() as session:
        touched = record_screen(
            session, stream_id=stream.id, stream="s", window=window, screen=screen,
            quarantined=held,
        )  # fmt: skip
        return [a.id for a in touched]


def _incidents(service: Service) -> list[dict[str, Any]]:
    with service.store.session() as session:
        alerts = session.scalars(select(Alert).where(Alert.kind == KIND).order_by(Alert.id))
        return [
            {"id": a.id, "subject": a.subject, "message": a.message, **a.payload} for a in alerts
        ]


def test_an_incident_opens_extends_skips_and_closes(service: Service) -> None:
    # Window 3: B is suspect, A is clean: one incident, B's.
    (opened,) = _record(service, 3, _screen(A=CLEAN, B=SUSPECT), B=12)
    (incident,) = _incidents(service)
    assert incident["id"] == opened and incident["subject"] == suspect_subject("s", "B")
    assert incident["subject"] == "s labels of group B"
    assert incident["message"] == (
        "window 3: 40 of group B's 100 labels look wrong (40%, against 6% of its reference "
        "samples, p=1e-20 < 0.005); 12 quarantined (learnstream quarantine list)"
    )
    assert incident["incident"] == {"windows": [3], "open": True, "closed_by_window": None}
    assert incident["group"] == "B" and incident["groups"] == ["B"]
    assert incident["windows"] == [
        {"window": 3, "flagged": 40, "n": 100, "expected": 0.06, "p_value": 1e-20,
         "quarantined": 12},
    ]  # fmt: skip

    # Window 4: B suspect again: the same incident grows.
    assert _record(service, 4, _screen(A=CLEAN, B=SUSPECT), B=7) == [opened]
    (incident,) = _incidents(service)
    assert incident["incident"]["windows"] == [3, 4] and incident["incident"]["open"]
    assert [w["quarantined"] for w in incident["windows"]] == [12, 7]

    # Window 4 again (a retried window): recorded once.
    assert _record(service, 4, _screen(A=CLEAN, B=SUSPECT), B=7) == [opened]
    (incident,) = _incidents(service)
    assert incident["incident"]["windows"] == [3, 4] and len(incident["windows"]) == 2

    # Window 5: B not screened (its inputs drifted): neither extended nor closed.
    assert _record(service, 5, _screen(A=CLEAN, B=SKIPPED)) == []
    (incident,) = _incidents(service)
    assert incident["incident"] == {"windows": [3, 4], "open": True, "closed_by_window": None}

    # Window 6: B screened and clean: closed by window 6.
    assert _record(service, 6, _screen(A=CLEAN, B=CLEAN)) == []
    (incident,) = _incidents(service)
    assert incident["incident"] == {"windows": [3, 4], "open": False, "closed_by_window": 6}

    # Window 7: B suspect once more: a new incident; the closed one stays as it was.
    (reopened,) = _record(service, 7, _screen(B=SUSPECT))
    closed, new = _incidents(service)
    assert reopened != opened and new["incident"]["windows"] == [7]
    assert new["windows"][0]["quarantined"] == 0  # none held in B this time
    assert closed["incident"]["closed_by_window"] == 6


def test_each_group_has_its_own_incident(service: Service) -> None:
    first = _record(service, 3, _screen(A=SUSPECT, B=SUSPECT), A=1, B=2)
    assert len(first) == 2
    _record(service, 4, _screen(A=CLEAN, B=SUSPECT))
    a, b = sorted(_incidents(service), key=lambda i: i["group"])
    assert (a["group"], a["incident"]["open"], a["incident"]["closed_by_window"]) == ("A", False, 4)
    assert (b["group"], b["incident"]["open"], b["incident"]["windows"]) == ("B", True, [3, 4])
    assert _record(service, 5, _screen()) == []  # nothing screened: nothing changes
