"""``fairness.gap`` for the champion: opened after k windows, extended, closed, on a store."""

from __future__ import annotations

from service.ingest.samples import get_or_create_stream
from service.pipeline.group_gap import check_gap, record_gap
from service.queries.listings import list_alerts

APART = {"A": (95, 100), "B": (60, 100)}  # gap 0.35, lower bound 0.26: far above 0.10
CLOSE = {"A": (90, 100), "B": (88, 100)}  # gap 0.02, lower bound below 0


def _record(service, stream_id: int, window: int, check) -> None:  # type: ignore[no-untyped-def]
    """One window's check recorded as the learner does, needing 3 windows above 0.10."""
    with service.store.session() as session:
        record_gap(
            session,
            stream_id=stream_id,
            stream="s",
            champion=1,
            window=window,
            check=check,
            windows_needed=3,
            limit=0.10,
        )


def test_a_lasting_gap_is_one_incident_opened_extended_and_closed(sqlite_service) -> None:
    stream = get_or_create_stream(sqlite_service.store, "s", sqlite_service.settings).stream
    run = 0
    for window, counts in enumerate([APART, APART, APART, APART, CLOSE, APART], start=1):
        check = check_gap(counts, run, limit=0.10, confidence=0.95, min_n=30)
        print(f"window {window}: gap {check.gap:.2f}, lower {check.lower:.3f}, run {check.run}")
        run = check.run
        _record(sqlite_service, stream.id, window, check)
    gaps = [a for a in list_alerts(sqlite_service) if a["kind"] == "fairness.gap"]
    assert len(gaps) == 1  # the sixth window starts a new run of one: no second incident yet
    payload = gaps[0]["payload"]
    assert payload["incident"] == {"windows": [3, 4], "open": False, "closed_by_window": 5}
    assert payload["groups"] == ["B"] and payload["best"] == "A"
    assert [g["window"] for g in payload["gaps"]] == [3, 4]
    assert "between groups A and B" in gaps[0]["message"]


def test_small_groups_and_one_group_have_no_gap() -> None:
    one = check_gap({"A": (95, 100), "tiny": (1, 10)}, 5, limit=0.1, confidence=0.95, min_n=30)
    assert (one.best, one.run) == (None, 0)


def test_a_retried_window_is_recorded_once(sqlite_service) -> None:
    stream = get_or_create_stream(sqlite_service.store, "s", sqlite_service.settings).stream
    check = check_gap(APART, 2, limit=0.10, confidence=0.95, min_n=30)
    for _ in range(2):  # the window, then its retry after a dead attempt
        _record(sqlite_service, stream.id, 3, check)
    gaps = [a for a in list_alerts(sqlite_service) if a["kind"] == "fairness.gap"]
    assert len(gaps) == 1 and gaps[0]["payload"]["incident"]["windows"] == [3]
