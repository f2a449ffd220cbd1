"""The sweep bounds traffic by age and by rows, per stream, and reports what it did."""

from __future__ import annotations

from datetime import timedelta

from helpers import digit_samples, make_settings, seeded_champion
from sqlalchemy import select

from service.context import Service, set_service
from service.models.serving import predict_images
from service.store.schema import Traffic
from service.streams.catalog import update_stream
from service.traffic.sweep import sweep_traffic


def _ids(service: Service) -> list[str]:
    with service.store.session() as session:
        return list(session.scalars(select(Traffic.traffic_id).order_by(Traffic.id)))


def _predict(service: Service, stream: str, n: int, seed: int) -> list[str]:
    samples = digit_samples(n, seed=seed, prefix=f"{stream}{seed}")
    ids = [s["id"] for s in samples]
    predict_images(service, stream, [s["image"] for s in samples], ids=ids)
    return ids


def test_retention_deletes_traffic_older_than_its_age_then_beyond_its_rows(
    tmp_path, database_url
) -> None:
    settings = make_settings(tmp_path, database_url, traffic_retention=3600.0, traffic_max_rows=5)
    service = Service.from_settings(settings)
    seeded_champion(service)
    old = _predict(service, "s", 3, seed=1)
    with service.store.session() as session:
        for row in session.scalars(select(Traffic)):
            row.received_at = row.received_at - timedelta(seconds=3601)
    new = _predict(service, "s", 7, seed=2)
    assert sweep_traffic(service.store, service.settings) == {
        "closed": {},
        "deleted": {"s": {"max_age": 3, "max_rows": 2}},
    }
    assert _ids(service) == new[2:]  # the newest 5
    assert sweep_traffic(service.store, service.settings) == {"closed": {}, "deleted": {}}
    assert not set(old) & set(_ids(service))
    service.close()


def test_a_stream_sets_its_own_traffic_bound_and_the_sweep_task_reports_it(tmp_path) -> None:
    from workers.tasks import sweep_task

    service = Service.from_settings(make_settings(tmp_path))
    set_service(service)
    try:
        seeded_champion(service, "small")
        seeded_champion(service, "large")
        update_stream(service.store, service.settings, "small", {"traffic_max_rows": 2})
        small = _predict(service, "small", 4, seed=1)
        _predict(service, "large", 4, seed=1)
        result = sweep_task()
        assert result["traffic"] == {
            "closed": {},
            "deleted": {"small": {"max_age": 0, "max_rows": 2}},
        }
        kept = _ids(service)
        assert [i for i in kept if i.startswith("small")] == small[2:]  # the newest 2
        assert len(kept) == 6  # and the 4 of "large"
    finally:
        set_service(None)
