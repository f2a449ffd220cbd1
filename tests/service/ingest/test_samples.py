import base64
import struct

import numpy as np
import pytest
import torch
from helpers import digit_samples, npy_base64
from sqlalchemy import func, select

from service.errors import InvalidRequest, StreamNotFound
from service.ingest.samples import content_digest, ingest, split_for
from service.queries.listings import list_alerts, status
from service.store.schema import Rejection, Sample, Stream, Window


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


def test_split_is_a_stable_function_of_the_content(service) -> None:
    keys = [f"x{i}" for i in range(2000)]
    splits = [split_for(k, 0.3) for k in keys]
    assert splits == [split_for(k, 0.3) for k in keys]
    assert 0.26 < splits.count("holdout") / len(keys) < 0.34
    result = ingest(service.store, service.settings, "s1", digit_samples(30))
    with service.store.session() as session:
        stored = session.execute(
            select(Sample.sample_id, Sample.split, Sample.content_digest, Sample.pixels)
        ).all()
    assert sorted(r.sample_id for r in stored) == sorted(result.accepted)
    for row in stored:
        assert row.content_digest == content_digest("s1", row.pixels)
        assert row.split == split_for(row.content_digest, service.settings.holdout_fraction)


def _stored(service, stream: str = "s1") -> list[tuple[str, int, str]]:  # type: ignore[no-untyped-def]
    with service.store.session() as session:
        rows = session.execute(
            select(Sample.sample_id, Sample.label, Sample.split)
            .join(Stream, Stream.id == Sample.stream_id)
            .where(Stream.name == stream)
            .order_by(Sample.seq)
        ).all()
    return [tuple(r) for r in rows]


def test_the_same_picture_under_other_ids_is_stored_once_on_one_side(service) -> None:
    samples = digit_samples(40)
    first = ingest(service.store, service.settings, "s1", samples)
    assert len(first.accepted) == 40
    # Every picture again under new ids, groups and encodings (.npy of the same pixels):
    # whichever side its first copy took, no copy reaches the other one.
    renamed = [
        s | {"id": f"again-{i}", "group": "C"}
        if i % 2
        else s | {"id": f"again-{i}", "image": npy_base64(_decoded(s["image"]))}
        for i, s in enumerate(samples)
    ]
    again = ingest(service.store, service.settings, "s1", renamed)
    assert again.accepted == [] and again.conflicts == []
    assert again.duplicates == [s["id"] for s in renamed]
    stored = _stored(service)
    assert [r[0] for r in stored] == [s["id"] for s in samples]
    splits = {r[2] for r in stored}
    assert splits == {"train", "holdout"}  # both sides used, each picture on one
    assert status(service)["streams"]["s1"]["samples"] == 40


def _decoded(image: str) -> np.ndarray:
    from service.ingest.images import decode

    return decode(base64.b64decode(image), max_pixels=10**6)[0].numpy()


def test_a_relabelled_picture_is_a_conflict_not_a_second_sample(service) -> None:
    samples = digit_samples(3)
    ingest(service.store, service.settings, "s1", samples)
    relabelled = samples[1] | {"id": "fixed-1", "label": (samples[1]["label"] + 1) % 10}
    fresh = digit_samples(1, seed=5)[0]
    result = ingest(service.store, service.settings, "s1", [fresh, relabelled])
    assert result.accepted == [fresh["id"]] and result.duplicates == []
    assert result.rejected == []
    conflict = {
        "index": 1,
        "id": "fixed-1",
        "stored_id": samples[1]["id"],
        "stored_label": str(samples[1]["label"]),
        "label": str(relabelled["label"]),
    }
    assert result.conflicts == [conflict]
    assert result.to_dict()["conflicts"] == [conflict]
    assert [r[0] for r in _stored(service)] == [*(s["id"] for s in samples), fresh["id"]]
    reason = (
        f"label: conflicts with a stored sample of the same image "
        f"(sample {samples[1]['id']!r} labelled {str(samples[1]['label'])!r})"
    )
    with service.store.session() as session:
        recorded = session.execute(select(Rejection.index, Rejection.reason)).all()
    assert [tuple(r) for r in recorded] == [(1, reason)]
    assert status(service)["streams"]["s1"]["rejected"] == 1
    (alert,) = list_alerts(service)
    assert alert["payload"]["counts"] == {
        "label: conflicts with a stored sample of the same image": 1
    }
    # Sent again under its stored label and a new id: a duplicate, not a conflict.
    back = ingest(
        service.store, service.settings, "s1", [relabelled | {"label": samples[1]["label"]}]
    )
    assert back.duplicates == ["fixed-1"] and back.conflicts == []


def test_copies_of_one_picture_inside_a_call_follow_the_same_rules(service) -> None:
    a, b = digit_samples(2)
    other = (a["label"] + 1) % 10
    call = [
        a,
        a | {"id": "a-copy"},  # same picture, same label: duplicate
        a | {"id": "a-relabelled", "label": other},  # same picture, other label: conflict
        b | {"id": "b-relabelled", "label": (b["label"] + 3) % 10},  # first copy: stored
        b,  # its picture is now held under another label: conflict
        a,  # known id: duplicate
    ]
    result = ingest(service.store, service.settings, "s1", call)
    assert result.accepted == [a["id"], "b-relabelled"]
    assert result.duplicates == ["a-copy", a["id"]]
    assert result.conflicts == [
        {
            "index": 2,
            "id": "a-relabelled",
            "stored_id": a["id"],
            "stored_label": str(a["label"]),
            "label": str(other),
        },
        {
            "index": 4,
            "id": b["id"],
            "stored_id": "b-relabelled",
            "stored_label": str((b["label"] + 3) % 10),
            "label": str(b["label"]),
        },
    ]
    assert len(_stored(service)) == 2


def test_samples_without_ids_keep_their_content_names_and_conflict_on_relabel(service) -> None:
    sample = {k: v for k, v in digit_samples(1)[0].items() if k != "id"}
    first = ingest(service.store, service.settings, "s1", [sample])
    relabel = ingest(
        service.store, service.settings, "s1", [sample | {"label": (sample["label"] + 1) % 10}]
    )
    (conflict,) = relabel.conflicts
    assert conflict["stored_id"] == first.accepted[0] and conflict["id"] != first.accepted[0]
    regroup = ingest(service.store, service.settings, "s1", [sample | {"group": "Z"}])
    assert regroup.duplicates and regroup.accepted == []


def test_the_same_picture_in_two_streams_is_two_samples(service) -> None:
    sample = digit_samples(1)[0]
    for stream in ("s1", "s2"):
        assert ingest(service.store, service.settings, stream, [sample]).accepted == [sample["id"]]
    with service.store.session() as session:
        digests = session.scalars(select(Sample.content_digest)).all()
    assert len(set(digests)) == 2  # the stream's name is part of the digest


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


def _png_base64(height: int, width: int, value: int = 100) -> str:
    from service.ingest.images import encode_png

    return base64.b64encode(
        encode_png(torch.full((1, height, width), value, dtype=torch.uint8))
    ).decode()


def test_an_unforeseen_error_rejects_its_sample_only(service, monkeypatch, caplog) -> None:
    import service.ingest.samples as samples

    real = samples.resolve_label

    def fragile(label, classes):  # type: ignore[no-untyped-def]
        if label == 3:
            raise RuntimeError("boom at /opt/site-packages/torchvision/csrc/decode.cpp:79")
        return real(label, classes)

    monkeypatch.setattr(samples, "resolve_label", fragile)
    good = digit_samples(2)
    odd = {**good[0], "id": "odd", "label": 3}
    with caplog.at_level("WARNING"):
        result = ingest(service.store, service.settings, "s1", [good[0], odd, good[1]])
    assert result.accepted == [s["id"] for s in good]
    assert result.rejected == [{"index": 1, "reason": "sample: cannot be read"}]
    (record,) = [
        r for r in caplog.records if r.getMessage() == "ingest: sample 1 could not be read"
    ]
    assert record.levelname == "WARNING" and record.exc_info[0] is RuntimeError


@pytest.mark.parametrize("error", [MemoryError, OverflowError, struct.error, RuntimeError])
def test_an_image_no_decoder_foresaw_rejects_its_sample_only(service, monkeypatch, error) -> None:
    import service.ingest.images as images

    good = digit_samples(2)
    odd_bytes = base64.b64decode(digit_samples(1, seed=9)[0]["image"])
    real = images._png_size

    def fragile(data: bytes) -> tuple[int, int]:
        if data == odd_bytes:
            raise error("at /usr/lib/python3.11/site-packages/PIL/PngImagePlugin.py")
        return real(data)

    monkeypatch.setattr(images, "_png_size", fragile)
    odd = {"id": "odd", "image": base64.b64encode(odd_bytes).decode(), "label": 1, "group": "A"}
    result = ingest(service.store, service.settings, "s1", [good[0], odd, good[1]])
    assert result.accepted == [s["id"] for s in good]
    assert result.rejected == [{"index": 1, "reason": "image: cannot be read"}]


def test_an_image_that_cannot_be_resized_rejects_its_sample_only(service, monkeypatch) -> None:
    from torchvision.transforms import v2

    real = v2.functional.resize

    def fragile(images, size, **kwargs):  # type: ignore[no-untyped-def]
        if images.shape[-1] == 13:
            raise RuntimeError("/opt/torch/csrc/UpSample.cpp: cannot")
        return real(images, size, **kwargs)

    monkeypatch.setattr(v2.functional, "resize", fragile)
    good = [
        {"id": "g1", "image": _png_base64(20, 20), "label": 1, "group": "A"},
        {"id": "g2", "image": _png_base64(30, 30, 150), "label": 2, "group": "B"},
    ]
    odd = {"id": "odd", "image": _png_base64(20, 13), "label": 1, "group": "A"}
    result = ingest(service.store, service.settings, "s1", [good[0], odd, good[1]])
    assert result.accepted == ["g1", "g2"]
    assert result.rejected == [{"index": 1, "reason": "image: cannot be resized"}]
    with service.store.session() as session:
        pixels = session.scalars(select(Sample.pixels).order_by(Sample.seq)).all()
    assert [len(p) for p in pixels] == [28 * 28, 28 * 28]


def test_a_truncated_png_is_rejected_without_library_internals(service) -> None:
    good = digit_samples(2)
    data = base64.b64decode(good[0]["image"])
    cut = {**good[0], "id": "cut", "image": base64.b64encode(data[:60]).decode()}
    result = ingest(service.store, service.settings, "s1", [good[0], cut, good[1]])
    assert result.accepted == [s["id"] for s in good]
    assert result.rejected == [
        {"index": 1, "reason": "image: PNG data cannot be decoded (truncated)"}
    ]


def test_text_and_meta_no_store_can_hold_reject_the_sample_not_the_call(service) -> None:
    good = digit_samples(2)
    odd = [
        {**good[0], "id": "nan", "meta": {"score": float("nan")}},
        {**good[0], "id": "inf", "meta": {"score": [float("inf")]}},
        {**good[0], "id": "surrogate", "group": "A\ud800"},
        {**good[0], "id": "id\udfff"},
        {**good[0], "id": "long", "colour" * 1000: 1},
    ]
    result = ingest(service.store, service.settings, "s1", [good[0], *odd, good[1]])
    assert result.accepted == [s["id"] for s in good]
    assert result.rejected == [
        {"index": 1, "reason": "meta: holds NaN or an infinite number"},
        {"index": 2, "reason": "meta: holds NaN or an infinite number"},
        {"index": 3, "reason": "group: is not valid Unicode (a lone surrogate)"},
        {"index": 4, "reason": "id: is not valid Unicode (a lone surrogate)"},
        {
            "index": 5,
            "reason": "sample: unknown field " + repr("colour" * 10)[:57] + "...",
        },
    ]


NAMES = ["cat", "dog", "bird"]


def test_integer_labels_are_refused_where_the_classes_are_names(service) -> None:
    settings = service.settings.model_copy(update={"default_classes": NAMES})
    good = digit_samples(2)
    samples = [good[0] | {"label": "dog"}, good[1] | {"label": 2}, good[1] | {"label": "bird"}]
    result = ingest(service.store, settings, "pets", samples)
    assert result.accepted == [good[0]["id"], good[1]["id"]]
    assert result.rejected == [
        {
            "index": 1,
            "reason": "label: 2 is an integer, but the stream's classes are names "
            "['cat', 'dog', 'bird']: send the class name",
        }
    ]
    with service.store.session() as session:
        assert session.scalars(select(Sample.label).order_by(Sample.seq)).all() == [1, 2]


@pytest.mark.parametrize(
    ("classes", "takes_ints"),
    [(["0", "1", "2"], True), (["1", "2", "3"], False), (["0", "2", "1"], False)],
)
def test_integer_labels_are_indices_only_where_the_names_are_those_integers(
    classes: list[str], takes_ints: bool
) -> None:
    from service.errors import InvalidSample
    from service.ingest.samples import resolve_label

    if takes_ints:
        assert resolve_label(2, classes) == 2
        with pytest.raises(InvalidSample, match="label: 3 is outside the stream's 3 classes"):
            resolve_label(3, classes)
    else:
        with pytest.raises(
            InvalidSample, match="is an integer, but the stream's classes are names"
        ):
            resolve_label(1, classes)
    assert resolve_label("2", classes) == classes.index("2")


def test_the_answer_says_which_call_created_the_stream(service, caplog) -> None:
    settings = service.settings.model_copy(update={"default_classes": NAMES})
    with caplog.at_level("INFO", logger="service.ingest.samples"):
        first = ingest(service.store, settings, "pets", [digit_samples(1)[0] | {"label": "cat"}])
    created = {"stream": "pets", "classes": NAMES, "channels": 1, "size": 28}
    assert first.to_dict()["created"] == created
    (record,) = [r for r in caplog.records if r.getMessage().startswith("stream created")]
    assert record.levelname == "INFO" and record.getMessage() == f"stream created: {created}"
    again = ingest(
        service.store, settings, "pets", [digit_samples(1, seed=1)[0] | {"label": "dog"}]
    )
    assert again.to_dict() == {
        "accepted": again.accepted,
        "duplicates": [],
        "rejected": [],
        "conflicts": [],
        "created": None,
    }
    from service.store.engine import Store

    other_process = Store(service.store.url)
    try:
        answer = ingest(
            other_process, settings, "pets", [digit_samples(1, seed=2)[0] | {"label": 0}]
        )
        assert answer.created is None and answer.rejected[0]["reason"].startswith("label: 0 is")
    finally:
        other_process.dispose()


def test_a_stream_a_concurrent_worker_created_first_is_not_created_by_this_call(service) -> None:
    from service.ingest.samples import _create_stream, get_or_create_stream
    from service.store.engine import Store

    first_worker = Store(service.store.url)
    try:
        assert get_or_create_stream(first_worker, "race", service.settings).created
        # This worker looked the stream up before the first one created it, then inserts too.
        stream, created = _create_stream(service.store, "race", service.settings)
        assert stream.name == "race" and created is False
    finally:
        first_worker.dispose()


def _sample_count(store, name: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    from service.store.schema import Stream

    with store.session() as session:
        stream = session.scalar(select(Stream).where(Stream.name == name))
        stored = session.scalars(select(Sample.stream_id).distinct()).all()
    assert stored == [stream.id]  # every sample lies in the live stream
    return stream.id, stream.sample_count


def test_a_stream_deleted_by_another_process_is_noticed(service) -> None:
    from service.store.engine import Store
    from service.store.removal import delete_stream

    store, settings = service.store, service.settings
    ingest(store, settings, "s", digit_samples(3))
    ingest(store, settings, "s", digit_samples(3, seed=1))
    other_process = Store(store.url)
    try:
        assert delete_stream(other_process, settings.resolved_model_dir, "s")
    finally:
        other_process.dispose()
    result = ingest(store, settings, "s", digit_samples(4, seed=2))
    assert len(result.accepted) == 4 and result.created is not None
    assert _sample_count(store, "s")[1] == 4


def test_a_stream_recreated_by_another_process_with_other_classes_is_noticed(service) -> None:
    from service.ingest.samples import get_or_create_stream
    from service.store.engine import Store
    from service.store.removal import delete_stream

    store, settings = service.store, service.settings
    ingest(store, settings, "s", digit_samples(3))
    ingest(store, settings, "s", digit_samples(3, seed=1))
    other_process = Store(store.url)
    try:
        assert delete_stream(other_process, settings.resolved_model_dir, "s")
        named = settings.model_copy(update={"default_classes": NAMES})
        recreated = get_or_create_stream(other_process, "s", named).stream
    finally:
        other_process.dispose()
    samples = digit_samples(3, seed=2)
    samples[0]["label"] = "bird"
    result = ingest(store, settings, "s", samples)
    assert result.accepted == [samples[0]["id"]] and result.created is None
    assert [r["reason"] for r in result.rejected] == [
        f"label: {s['label']} is an integer, but the stream's classes are names "
        "['cat', 'dog', 'bird']: send the class name"
        for s in samples[1:]
    ]
    assert _sample_count(store, "s") == (recreated.id, 1)
    with store.session() as session:
        assert session.scalar(select(Sample.label)) == 2


def test_every_field_of_a_call_is_stored_as_sent(service) -> None:
    """On PostgreSQL the rows go in by COPY: each column keeps its value and type."""
    with_meta, without = digit_samples(2)
    with_meta["meta"] = {"camera": "é-1", "nested": [1, 2.5, None, True]}
    result = ingest(service.store, service.settings, "s1", [with_meta, without])
    assert result.accepted == [with_meta["id"], without["id"]]
    with service.store.session() as session:
        rows = session.execute(
            select(Sample.sample_id, Sample.seq, Sample.label, Sample.group, Sample.meta).order_by(
                Sample.seq
            )
        ).all()
        nulls = session.scalar(select(func.count()).where(Sample.meta.is_(None)))
        received = session.scalars(select(Sample.received_at)).all()
    assert [tuple(r) for r in rows] == [
        (with_meta["id"], 1, with_meta["label"], "A", with_meta["meta"]),
        (without["id"], 2, without["label"], "B", None),
    ]
    assert nulls == 1  # SQL NULL, not JSON null
    assert all(r is not None for r in received)
