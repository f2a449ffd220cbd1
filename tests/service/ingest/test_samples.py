import base64

import numpy as np
import pytest
from helpers import digit_samples, npy_base64
from sqlalchemy import func, select

from service.errors import InvalidRequest, StreamNotFound
from service.ingest.samples import ingest, split_for
from service.queries.listings import list_alerts, status
from service.store.schema import Rejection, Sample, Window


def test_mixed_batch_accepts_good_and_rejects_bad_with_reasons(service) -> None:
    good = digit_samples(4)
    bad = [
        {"image": "%%%", "label": 1, "group": "A"},
        {"image": good[0]["image"], "label": 10, "group": "A"},
        {"image": good[0]["image"], "label": "seven", "group": "A"},
        {"image": good[0]["image"], "label": 1, "group": ""},
        {"image": good[0]["image"], "label": 1, "group": "A", "meta": [1]},
        {"image": base64.b64encode(b"GIF89a").decode(), "label": 1, "group": "A"},
        {
            "image": npy_base64(np.array([None], dtype=object), allow_pickle=True),
            "label": 1,
            "group": "A",
        },
        {"image": good[0]["image"], "label": 1, "group": "A", "colour": "red"},
        {"label": 1, "group": "A"},
        "not an object",
    ]
    result = ingest(service.store, service.settings, "s1", [good[0], *bad, *good[1:]])
    assert result.accepted == [s["id"] for s in good]
    assert result.duplicates == []
    assert result.rejected == [
        {"index": 1, "reason": "image: not valid base64"},
        {"index": 2, "reason": "label: 10 is outside the stream's 10 classes"},
        {
            "index": 3,
            "reason": "label: 'seven' is not one of the stream's classes "
            "['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']",
        },
        {"index": 4, "reason": "group: must be a non-empty string"},
        {"index": 5, "reason": "meta: must be a JSON object"},
        {"index": 6, "reason": "image: not a PNG, JPEG or .npy file"},
        {"index": 7, "reason": "image: .npy holds Python objects, which are never loaded"},
        {"index": 8, "reason": "sample: unknown field 'colour'"},
        {"index": 9, "reason": "image: missing"},
        {"index": 10, "reason": "sample: must be an object, got str"},
    ]
    with service.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 4
        assert session.scalar(select(func.count()).select_from(Rejection)) == 10
    alerts = list_alerts(service)
    assert [a["kind"] for a in alerts] == ["ingest.rejected"]
    assert alerts[0]["payload"]["total"] == 10


def test_rejection_alerts_fold_into_one_per_burst(service) -> None:
    for _ in range(3):
        ingest(service.store, service.settings, "s1", [{"image": "%", "label": 1, "group": "A"}])
    alerts = list_alerts(service)
    assert len(alerts) == 1
    assert alerts[0]["payload"]["counts"] == {"image: not valid base64": 3}


def test_redelivery_reports_duplicates_and_never_double_counts(service) -> None:
    samples = digit_samples(10)
    first = ingest(service.store, service.settings, "s1", samples)
    again = ingest(service.store, service.settings, "s1", samples[5:] + digit_samples(2, seed=1))
    assert len(first.accepted) == 10
    assert again.duplicates == [s["id"] for s in samples[5:]]
    assert len(again.accepted) == 2
    assert status(service)["streams"]["s1"]["samples"] == 12


def test_duplicates_inside_one_call(service) -> None:
    sample = digit_samples(1)[0]
    result = ingest(service.store, service.settings, "s1", [sample, sample])
    assert result.accepted == [sample["id"]] and result.duplicates == [sample["id"]]


def test_id_defaults_to_content_hash(service) -> None:
    sample = {k: v for k, v in digit_samples(1)[0].items() if k != "id"}
    first = ingest(service.store, service.settings, "s1", [sample])
    second = ingest(service.store, service.settings, "s1", [sample])
    assert len(first.accepted[0]) == 64 and second.duplicates == first.accepted


def test_windows_close_by_size_in_arrival_order(service) -> None:
    samples = digit_samples(150)
    closed = []
    for start in range(0, 150, 40):
        closed += ingest(
            service.store, service.settings, "s1", samples[start : start + 40]
        ).closed_windows
    assert len(closed) == 2
    with service.store.session() as session:
        windows = session.scalars(select(Window).order_by(Window.seq)).all()
        assert [(w.seq, w.state, w.size) for w in windows] == [
            (1, "closed", 64),
            (2, "closed", 64),
            (3, "open", 22),
        ]
        seqs = session.scalars(select(Sample.seq).order_by(Sample.seq)).all()
        assert seqs == list(range(1, 151))
        first_window_ids = session.scalars(
            select(Sample.sample_id).where(Sample.window_id == windows[0].id).order_by(Sample.seq)
        ).all()
    assert first_window_ids == [s["id"] for s in samples[:64]]
    counts = status(service)["streams"]["s1"]["windows"]
    assert counts == {"open": 1, "closed": 2, "processed": 0}


def test_split_is_a_stable_function_of_the_id(service) -> None:
    ids = [f"x{i}" for i in range(2000)]
    splits = [split_for(i, 0.3) for i in ids]
    assert splits == [split_for(i, 0.3) for i in ids]
    assert 0.26 < splits.count("holdout") / len(ids) < 0.34
    result = ingest(service.store, service.settings, "s1", digit_samples(30))
    with service.store.session() as session:
        stored = dict(session.execute(select(Sample.sample_id, Sample.split)).all())
    assert all(
        stored[i] == split_for(i, service.settings.holdout_fraction) for i in result.accepted
    )


def test_label_by_class_name(service) -> None:
    sample = digit_samples(1)[0] | {"label": "7"}
    ingest(service.store, service.settings, "s1", [sample])
    with service.store.session() as session:
        assert session.scalar(select(Sample.label)) == 7


def test_unreadable_calls_fail_clearly(service) -> None:
    with pytest.raises(InvalidRequest, match="samples: must be a list, got dict"):
        ingest(service.store, service.settings, "s1", {"image": "x"})
    for name in ("a\x00b", "", "demo/", "./demo", "../x", ".hidden", "a b", "x" * 129, 7):
        with pytest.raises(InvalidRequest, match="stream: must be a name of 1 to 128 letters"):
            ingest(service.store, service.settings, name, [])
    too_many = [{}] * (service.settings.max_samples_per_call + 1)
    with pytest.raises(InvalidRequest, match="exceed the limit of 1024 per call"):
        ingest(service.store, service.settings, "s1", too_many)


def test_unknown_stream_refused_when_auto_create_is_off(service) -> None:
    settings = service.settings.model_copy(update={"auto_create_streams": False})
    with pytest.raises(
        StreamNotFound, match="unknown stream 'nope' \\(auto_create_streams is off\\)"
    ):
        ingest(service.store, settings, "nope", digit_samples(1))


def test_windows_close_by_age_so_a_slow_stream_is_still_checked(service) -> None:
    import time

    from service.ingest.windows import close_aged_windows

    settings = service.settings.model_copy(update={"window_max_age": 0.3, "window_min_size": 10})
    ingest(service.store, settings, "slow", digit_samples(5, seed=1))
    time.sleep(0.4)
    assert close_aged_windows(service.store, settings) == {}  # 5 samples: too few to test
    ingest(service.store, settings, "slow", digit_samples(10, seed=2))
    result = ingest(service.store, settings, "slow", digit_samples(1, seed=3))
    assert len(result.closed_windows) == 1  # aged and big enough: closed before adding
    time.sleep(0.4)
    ingest(service.store, settings, "slow", digit_samples(12, seed=4))
    time.sleep(0.4)
    closed = close_aged_windows(service.store, settings)
    assert list(closed) == ["slow"] and len(closed["slow"]) == 1
    with service.store.session() as session:
        sizes = session.execute(
            select(Window.seq, Window.state, Window.size).order_by(Window.seq)
        ).all()
    assert [tuple(r) for r in sizes] == [(1, "closed", 15), (2, "closed", 13)]


def test_schema_creation_is_safe_from_many_processes_at_once(database_url) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from service.store.engine import Store

    stores = [Store(database_url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: s.create_schema(), stores))
    for store in stores:
        store.dispose()


def test_nul_characters_reject_the_sample_not_the_call(service) -> None:
    good = digit_samples(2)
    bad_group = {**good[0], "id": "nul-1", "group": "A\x00"}
    bad_meta = {**good[0], "id": "nul-2", "meta": {"k": "v\x00"}}
    result = ingest(service.store, service.settings, "s1", [bad_group, bad_meta, *good])
    assert result.accepted == [s["id"] for s in good]
    assert result.rejected == [
        {"index": 0, "reason": "group: contains a NUL character"},
        {"index": 1, "reason": "meta: contains a NUL character"},
    ]
