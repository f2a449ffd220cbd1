"""Quarantine records on SQLite and PostgreSQL: holding samples and windows (once, whatever
retries), listing them with class names, and an operator's release or confirmation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers import CLASS_NAMES, hold_by_hand, hold_window_by_hand, make_settings, stream_of_windows
from sqlalchemy import func, select

from service.context import Service
from service.errors import InvalidRequest, StreamNotFound
from service.quarantine import records
from service.quarantine.records import decide, list_quarantine, quarantine_counts
from service.store.batches import load_batch
from service.store.schema import Quarantine, Sample, Window

Rows = dict[int, list[tuple[int, str, int, str]]]


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[Service]:
    """Windows of 8 samples; classes named, so that listings show names, not indices."""
    settings = make_settings(tmp_path, database_url, window_size=8, default_classes=CLASS_NAMES)
    svc = Service.from_settings(settings)
    yield svc
    svc.close()


@pytest.fixture
def windows(service: Service) -> Rows:
    """Stream ``s``: windows 1 and 2 closed (8 samples each), window 3 open (4)."""
    rows = stream_of_windows(service, "s", 20)
    assert [len(rows[seq]) for seq in (1, 2, 3)] == [8, 8, 4]
    return rows


def _loaded(service: Service, stream: str, seq: int, *, quarantined: bool = False) -> list[str]:
    """The sample ids ``load_batch`` gives of window number ``seq``."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        window_id = session.scalar(
            select(Window.id).where(Window.stream_id == record.id, Window.seq == seq)
        )
        return load_batch(session, record, [window_id], quarantined=quarantined).sample_ids


def _flags(service: Service) -> dict[str, bool]:
    with service.store.session() as session:
        return dict(session.execute(select(Sample.sample_id, Sample.quarantined)).tuples().all())


def _window_flag(service: Service, stream: str, seq: int) -> bool:
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        return bool(
            session.scalar(
                select(Window.quarantined).where(Window.stream_id == record.id, Window.seq == seq)
            )
        )


def _count(service: Service) -> int:
    with service.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Quarantine)) or 0)


def _recent(stamp: str | None) -> bool:
    assert stamp is not None
    return abs((datetime.fromisoformat(stamp) - datetime.now().astimezone()).total_seconds()) < 60


def test_held_samples_are_flagged_and_recorded_once(service: Service, windows: Rows) -> None:
    held = windows[1][2:5]
    assert hold_by_hand(service, "s", 1, held, reason="label screen of window 1") == 3

    flags = _flags(service)
    assert sorted(s for s, q in flags.items() if q) == sorted(s for _, s, _, _ in held)
    everyone = [s for _, s, _, _ in windows[1]]
    assert _loaded(service, "s", 1) == [s for s in everyone if s not in flags or not flags[s]]
    assert _loaded(service, "s", 1, quarantined=True) == everyone  # the window's own processing
    with service.store.session() as session:
        rows = session.scalars(select(Quarantine).order_by(Quarantine.id)).all()
        assert [(q.kind, q.status, q.sample_row) for q in rows] == [
            ("sample", "held", row) for row, _, _, _ in held
        ]
        assert [(q.given, q.believed) for q in rows] == [
            (label, (label + 1) % 10) for _, _, label, _ in held
        ]
        assert [q.score for q in rows] == pytest.approx([0.01, 0.02, 0.03])
        assert {q.reason for q in rows} == {"label screen of window 1"}
        assert {q.decided_by for q in rows} == {None}

    # A retried window holds the same samples again: only the one not yet held is added.
    assert hold_by_hand(service, "s", 1, windows[1][2:6]) == 1
    assert _count(service) == 4
    assert hold_by_hand(service, "s", 1, []) == 0


def test_a_window_is_held_once(service: Service, windows: Rows) -> None:
    assert not _window_flag(service, "s", 2)
    assert hold_window_by_hand(service, "s", 2, "candidate v3 rejected under label drift") is True
    assert hold_window_by_hand(service, "s", 2, "again") is False
    assert _window_flag(service, "s", 2) and not _window_flag(service, "s", 1)
    (entry,) = list_quarantine(service.store, "s")
    assert entry["kind"] == "window" and entry["window"] == 2
    assert entry["reason"] == "candidate v3 rejected under label drift"
    assert entry["sample"] is None and entry["given"] is None and entry["score"] is None
    assert not any(_flags(service).values())  # its samples are not flagged one by one


def test_listing_per_status_names_the_classes(service: Service, windows: Rows) -> None:
    hold_by_hand(service, "s", 1, windows[1][:3])
    hold_window_by_hand(service, "s", 2)
    first, second, third = (s for _, s, _, _ in windows[1][:3])
    decide(service.store, "s", "released", ids=[first], by="alice", note="label was right")
    decide(service.store, "s", "confirmed", ids=[second], by="bob")

    held = list_quarantine(service.store, "s")
    assert [(q["kind"], q["sample"], q["window"]) for q in held] == [
        ("window", None, 2),
        ("sample", third, 1),
    ]  # newest first
    _, label, group = windows[1][2][1:]
    sample = held[1]
    assert sample["given"] == CLASS_NAMES[label]
    assert sample["believed"] == CLASS_NAMES[(label + 1) % 10]
    assert sample["group"] == group and sample["split"] in ("train", "holdout")
    assert sample["score"] == pytest.approx(0.03) and sample["status"] == "held"

    (released,) = list_quarantine(service.store, "s", "released")
    assert released["sample"] == first and released["decided_by"] == "alice"
    assert released["note"] == "label was right" and _recent(released["decided_at"])
    (confirmed,) = list_quarantine(service.store, "s", "confirmed")
    assert confirmed["sample"] == second and confirmed["note"] is None
    assert len(list_quarantine(service.store, "s", "all")) == 4
    assert list_quarantine(service.store, "s", None) == list_quarantine(service.store, "s", "all")
    assert len(list_quarantine(service.store, "s", "all", limit=2)) == 2
    assert [q["kind"] for q in list_quarantine(service.store, "s", "all", kind="window")] == [
        "window"
    ]
    assert quarantine_counts(service.store, "s") == {
        "held": {"sample": 1, "window": 1},
        "released": {"sample": 1, "window": 0},
        "confirmed": {"sample": 1, "window": 0},
    }


def test_release_by_id_puts_the_sample_back(service: Service, windows: Rows) -> None:
    hold_by_hand(service, "s", 1, windows[1][:2])
    kept, back = windows[1][0][1], windows[1][1][1]
    assert back not in _loaded(service, "s", 1)

    decided = decide(service.store, "s", "released", ids=[back], by="carol", note="fine")
    assert decided.to_dict() == {"released": 1, "samples": [back], "windows": []}
    assert back in _loaded(service, "s", 1) and kept not in _loaded(service, "s", 1)
    assert not _flags(service)[back] and _flags(service)[kept]
    (entry,) = list_quarantine(service.store, "s", "released")
    assert (entry["decided_by"], entry["note"]) == ("carol", "fine")
    assert _recent(entry["decided_at"])

    # What is no longer held is not decided on again (nor is an unknown id).
    again = decide(service.store, "s", "confirmed", ids=[back, "no-such-id"], by="dave")
    assert again.to_dict() == {"confirmed": 0, "samples": [], "windows": []}
    assert list_quarantine(service.store, "s", "released")[0]["decided_by"] == "carol"


def test_confirm_keeps_the_sample_out(service: Service, windows: Rows) -> None:
    hold_by_hand(service, "s", 1, windows[1][:1])
    (_, out, _, _) = windows[1][0]
    decided = decide(service.store, "s", "confirmed", ids=[out], by="erin")
    assert decided.to_dict() == {"confirmed": 1, "samples": [out], "windows": []}
    assert out not in _loaded(service, "s", 1) and _flags(service)[out]
    assert decide(service.store, "s", "released", ids=[out], by="erin").samples == []
    assert out not in _loaded(service, "s", 1)
    (entry,) = list_quarantine(service.store, "s", "confirmed")
    assert entry["decided_by"] == "erin" and _recent(entry["decided_at"])


def test_release_of_a_window_by_number(service: Service, windows: Rows) -> None:
    hold_window_by_hand(service, "s", 1)
    hold_window_by_hand(service, "s", 2)
    hold_by_hand(service, "s", 2, windows[2][:2])
    decided = decide(service.store, "s", "released", windows=[2], by="frank")
    assert decided.to_dict() == {"released": 1, "samples": [], "windows": [2]}
    assert not _window_flag(service, "s", 2) and _window_flag(service, "s", 1)
    # A window's number names the window's own record, not the samples held from it.
    assert [(q["kind"], q["window"]) for q in list_quarantine(service.store, "s")] == [
        ("sample", 2),
        ("sample", 2),
        ("window", 1),
    ]


def test_everything_decides_all_the_stream_holds_and_nothing_else(
    service: Service, windows: Rows
) -> None:
    other = stream_of_windows(service, "t", 8, seed=1)
    hold_by_hand(service, "s", 1, windows[1][:2])
    hold_by_hand(service, "s", 2, windows[2][:1])
    hold_window_by_hand(service, "s", 2)
    hold_by_hand(service, "t", 1, other[1][:1])

    decided = decide(service.store, "s", "released", everything=True, by="grace")
    assert decided.windows == [2]
    assert decided.samples == sorted([*(s for _, s, _, _ in windows[1][:2]), windows[2][0][1]])
    assert list_quarantine(service.store, "s") == []
    assert not _window_flag(service, "s", 2)
    assert [q["sample"] for q in list_quarantine(service.store, "t")] == [other[1][0][1]]
    assert _flags(service)[other[1][0][1]]


def test_errors_say_what_is_missing(service: Service, windows: Rows) -> None:
    hold_by_hand(service, "s", 1, windows[1][:1])
    cases = [
        ({"ids": ["x"], "by": ""}, records.NO_BY),
        ({"ids": ["x"], "by": "   "}, records.NO_BY),
        ({"ids": ["x"], "by": "o" * 129}, records.LONG_BY),
        ({"by": "alice"}, records.NOTHING_NAMED),
        ({"ids": [], "windows": [], "by": "alice"}, records.NOTHING_NAMED),
    ]
    for arguments, message in cases:
        with pytest.raises(InvalidRequest) as raised:
            decide(service.store, "s", "released", **arguments)  # type: ignore[arg-type]
        assert str(raised.value) == message
    assert records.NO_BY == "by: say who decides (an operator's name)"
    assert records.LONG_BY == "by: at most 128 characters"
    assert records.NOTHING_NAMED == (
        "name the samples (ids) or windows to decide on, or all of them"
    )
    with pytest.raises(InvalidRequest) as raised:
        list_quarantine(service.store, "s", "pending")
    assert str(raised.value) == (
        "status: must be one of held, released, confirmed or all, got 'pending'"
    )
    with pytest.raises(StreamNotFound):
        list_quarantine(service.store, "nope")
    with pytest.raises(StreamNotFound):
        decide(service.store, "nope", "released", everything=True, by="alice")
    assert len(list_quarantine(service.store, "s")) == 1  # nothing was decided
    assert decide(service.store, "s", "confirmed", ids=["x"], by="o" * 128).samples == []
