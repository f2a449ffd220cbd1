"""Traffic windows close by size as predictions are kept, and by age (next capture, sweep)."""

from __future__ import annotations

from datetime import timedelta

from helpers import digit_samples, make_settings, seeded_champion
from sqlalchemy import select

from service.context import Service
from service.models.serving import predict_images
from service.store.schema import Traffic, TrafficWindow, Window
from service.traffic.windows import close_aged_traffic_windows


def _windows(service: Service) -> list[tuple[int, str, int, int]]:
    """(seq, state, size, rows in it) of each traffic window, in order."""
    with service.store.session() as session:
        windows = session.scalars(select(TrafficWindow).order_by(TrafficWindow.seq)).all()
        rows = session.scalars(select(Traffic.window_id)).all()
        return [(w.seq, w.state, w.size, rows.count(w.id)) for w in windows]


def _open_earlier(service: Service, seq: int, seconds: float = 61.0) -> None:
    with service.store.session() as session:
        window = session.scalar(select(TrafficWindow).where(TrafficWindow.seq == seq))
        assert window is not None
        window.opened_at = window.opened_at - timedelta(seconds=seconds)


def _predict(service: Service, n: int, seed: int) -> None:
    samples = digit_samples(n, seed=seed, prefix=f"t{seed}")
    predict_images(service, "s", [s["image"] for s in samples], ids=[s["id"] for s in samples])


def test_traffic_windows_close_by_size_across_calls(tmp_path, database_url) -> None:
    service = Service.from_settings(make_settings(tmp_path, database_url, traffic_window_size=4))
    seeded_champion(service)
    _predict(service, 6, seed=1)
    assert _windows(service) == [(1, "closed", 4, 4), (2, "open", 2, 2)]
    _predict(service, 7, seed=2)
    assert _windows(service) == [
        (1, "closed", 4, 4),
        (2, "closed", 4, 4),
        (3, "closed", 4, 4),
        (4, "open", 1, 1),
    ]
    with service.store.session() as session:  # labelled windows are untouched
        assert session.scalars(select(Window)).all() == []
    service.close()


def test_traffic_windows_close_by_age_at_the_next_capture_and_in_the_sweep(
    tmp_path, database_url
) -> None:
    settings = make_settings(tmp_path, database_url, traffic_window_max_age=60.0)
    service = Service.from_settings(settings)
    seeded_champion(service)
    _predict(service, 2, seed=1)
    assert close_aged_traffic_windows(service.store, service.settings) == {}
    _open_earlier(service, 1)
    _predict(service, 3, seed=2)  # finds the open window too old: closes it, opens another
    assert _windows(service) == [(1, "closed", 2, 2), (2, "open", 3, 3)]
    _open_earlier(service, 2)
    assert close_aged_traffic_windows(service.store, service.settings) == {"s": [2]}
    assert _windows(service) == [(1, "closed", 2, 2), (2, "closed", 3, 3)]
    assert close_aged_traffic_windows(service.store, service.settings) == {}
    service.close()
