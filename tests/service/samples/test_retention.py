"""Retention: the sweep deletes beyond a stream's age and count limits through the deletion
path, and keeps what the learner, the gate and the reference still need, saying so."""

from __future__ import annotations

from datetime import timedelta

from helpers import digit_samples, make_settings
from sqlalchemy import select, update
from trained_stream import STREAM, trained_service

from service.context import Service, set_service
from service.ingest.samples import ingest
from service.samples.deletion import list_deletions
from service.samples.retention import apply_retention, protected_windows
from service.store.schema import Sample, Stream, Window, utcnow

# The gate's latest window and a reference of at least 20 held-out samples are kept.
KEEP_LITTLE = {"gate_windows": 1, "reference_size": 20}


def _stream_of_windows(tmp_path, **settings) -> Service:  # type: ignore[no-untyped-def]
    """Five processed windows of 64 samples and an open one of 10 (no training needed)."""
    service = Service.from_settings(make_settings(tmp_path, **KEEP_LITTLE, **settings))
    for window in range(5):
        ingest(service.store, service.settings, STREAM, digit_samples(64, seed=window))
    ingest(service.store, service.settings, STREAM, digit_samples(10, seed=9))
    with service.store.session() as session:
        session.execute(update(Window).where(Window.seq <= 5).values(state="processed"))
    return service


def _seqs(service: Service) -> list[int]:
    with service.store.session() as session:
        return list(session.scalars(select(Sample.seq).order_by(Sample.seq)))


def _window_seqs(service: Service, window_ids: set[int]) -> set[int]:
    with service.store.session() as session:
        return set(session.scalars(select(Window.seq).where(Window.id.in_(window_ids))))


def _aged(service: Service, windows: list[int], days: float = 2) -> None:
    with service.store.session() as session:
        ids = select(Window.id).where(Window.seq.in_(windows))
        session.execute(
            update(Sample)
            .where(Sample.window_id.in_(ids))
            .values(received_at=utcnow() - timedelta(days=days))
        )


def test_protected_windows_are_the_open_latest_and_reference_ones(tmp_path) -> None:
    service = _stream_of_windows(tmp_path)
    with service.store.session() as session:
        stream = service.store.stream(session, STREAM)
        protected = _window_seqs(service, protected_windows(session, stream.id, service.settings))
    assert {5, 6} <= protected <= {4, 5, 6}  # window 4 only if 5 lacks 20 held-out samples


def test_the_sweep_keeps_a_streams_newest_samples_up_to_its_count(tmp_path) -> None:
    from workers.tasks import sweep_task

    service = _stream_of_windows(tmp_path)
    with service.store.session() as session:  # this stream's own limit; none globally
        session.execute(update(Stream).values(config={"retention_max_samples": 150}))
    set_service(service)
    try:
        swept = sweep_task()
    finally:
        set_service(None)

    assert swept["deleted"][STREAM]["deleted"] == 180
    assert _seqs(service) == list(range(181, 331))  # the newest 150, in arrival order
    (record,) = list_deletions(service, STREAM)
    assert (record["by"], record["deleted"], record["kept"]) == ("retention", 180, None)
    assert record["criteria"]["retention"] == {"max_age": None, "max_samples": 150}
    assert record["reason"] == "retention: beyond 150 samples"
    assert apply_retention(service) == {}  # within its limit now: nothing more, no record


def test_a_count_it_cannot_meet_keeps_what_the_gate_and_reference_need(tmp_path) -> None:
    service = _stream_of_windows(tmp_path, retention_max_samples=50)
    (result,) = apply_retention(service).values()
    with service.store.session() as session:
        kept_windows = set(session.scalars(select(Window.seq).join(Sample).distinct()))
    assert kept_windows <= {4, 5, 6} and {5, 6} <= kept_windows
    remaining = len(_seqs(service))
    assert result.deleted == 330 - remaining
    assert result.kept is not None
    assert result.kept["max_samples"] == {"limit": 50, "samples_over": remaining - 50}
    assert set(result.kept["windows"]) == kept_windows
    assert list_deletions(service, STREAM)[0]["kept"] == result.kept


def test_age_deletes_old_samples_and_keeps_the_protected_ones(tmp_path) -> None:
    service = _stream_of_windows(tmp_path, retention_max_age=86400.0)
    _aged(service, [1, 2, 5])
    (result,) = apply_retention(service).values()
    assert result.deleted == 128
    assert _seqs(service) == list(range(129, 331))
    assert result.kept is not None
    assert result.kept["max_age"] == {"limit_s": 86400.0, "older_samples_kept": 64}
    assert result.kept["windows"] == [5]


def test_retention_goes_through_lineage_and_purges_buffers(tmp_path) -> None:
    service = trained_service(tmp_path, None, 4, retention_max_age=86400.0, **KEEP_LITTLE)
    with service.store.session() as session:
        window_1 = set(
            session.scalars(select(Sample.sample_id).join(Window).where(Window.seq == 1))
        )
    champion = service.registry.champion(1)
    assert champion is not None
    assert window_1 & set(service.version(STREAM, champion).state.meta["buffer_ids"])
    _aged(service, [1])

    (result,) = apply_retention(service).values()

    assert result.deleted == 64
    assert result.versions_trained_on_them == [1, 2, 3, 4]  # all descend from version 1
    assert champion in result.purged_versions
    assert not window_1 & set(service.version(STREAM, champion).state.meta["buffer_ids"])
