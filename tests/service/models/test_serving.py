"""Predict's contract: optional ids and groups, one per image; old calls answer as before."""

from __future__ import annotations

import pytest
from helpers import digit_samples, make_settings, seeded_champion
from sqlalchemy import select

from service.context import Service
from service.errors import InvalidRequest
from service.models.serving import predict_images
from service.store.schema import Traffic


def _images(n: int, seed: int = 0) -> list[str]:
    return [s["image"] for s in digit_samples(n, seed=seed)]


def _traffic(service: Service) -> list[Traffic]:
    with service.store.session() as session:
        return list(session.scalars(select(Traffic).order_by(Traffic.id)))


def test_predict_without_ids_answers_as_before_and_keeps_its_images(service) -> None:
    seeded_champion(service)
    answer = predict_images(service, "s", _images(3))
    assert set(answer) == {"model_version", "classes", "predictions"}
    assert answer["model_version"] == 1 and len(answer["predictions"]) == 3
    rows = _traffic(service)
    assert len(rows) == 3
    assert all(r.traffic_id == r.content_digest and r.group is None for r in rows)
    assert all(len(r.pixels) == 28 * 28 and r.served_version == 1 for r in rows)
    classes = answer["classes"]
    for row, prediction in zip(rows, answer["predictions"], strict=True):
        assert classes[row.predicted] == prediction["label"]
        assert row.probability == pytest.approx(max(prediction["scores"]), abs=1e-6)


def test_predict_with_ids_and_groups_keeps_them_with_what_was_served(service) -> None:
    seeded_champion(service)
    plain = predict_images(service, "s", _images(2))
    named = predict_images(service, "s", _images(2), ids=["p-1", "p-2"], groups=["A", "B"])
    assert named["predictions"] == plain["predictions"]  # the answer does not change
    rows = [r for r in _traffic(service) if r.traffic_id.startswith("p-")]
    assert [(r.traffic_id, r.group) for r in rows] == [("p-1", "A"), ("p-2", "B")]


@pytest.mark.parametrize(
    ("ids", "groups", "message"),
    [
        (["a"], None, "ids: 1 given for 2 images (one per image)"),
        (None, ["A", "B", "C"], "groups: 3 given for 2 images (one per image)"),
        ("a,b", None, "ids: must be a list of strings, one per image"),
        (["a", ""], None, "ids[1]: must be a non-empty string"),
        (["a", 7], None, "ids[1]: must be a non-empty string"),
        (["a", "x" * 129], None, "ids[1]: longer than 128 characters"),
        (["a", "a"], None, "ids[1]: repeats ids[0]"),
        (["a", "b"], ["A", "B\x00"], "groups[1]: contains a NUL character"),
        (None, ["A", "g" * 65], "groups[1]: longer than 64 characters"),
    ],
)
def test_bad_ids_and_groups_are_refused_naming_the_field(
    sqlite_service, ids, groups, message
) -> None:
    seeded_champion(sqlite_service)
    with pytest.raises(InvalidRequest) as caught:
        predict_images(sqlite_service, "s", _images(2), ids=ids, groups=groups)
    assert str(caught.value) == message
    assert _traffic(sqlite_service) == []


def test_a_prediction_never_fails_because_its_traffic_cannot_be_kept(
    sqlite_service, monkeypatch, caplog
) -> None:
    import service.traffic.capture as capture

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    seeded_champion(sqlite_service)
    monkeypatch.setattr(capture, "_insert", broken)
    answer = predict_images(sqlite_service, "s", _images(2), ids=["a", "b"])
    assert len(answer["predictions"]) == 2
    assert "a prediction's images could not be kept" in caplog.text
    assert _traffic(sqlite_service) == []


def test_capture_share_zero_keeps_nothing_and_a_half_is_chosen_by_id(tmp_path) -> None:
    from service.traffic.capture import kept

    none = Service.from_settings(make_settings(tmp_path / "none", traffic_capture=0.0))
    seeded_champion(none)
    predict_images(none, "s", _images(4), ids=[f"i-{k}" for k in range(4)])
    assert _traffic(none) == []
    ids = [f"i-{k}" for k in range(40)]
    stored = []
    for name in ("half-1", "half-2"):  # two services, calls split differently: same choice
        half = Service.from_settings(make_settings(tmp_path / name, traffic_capture=0.5))
        seeded_champion(half)
        images = _images(40)
        cut = 15 if name == "half-1" else 30
        predict_images(half, "s", images[:cut], ids=ids[:cut])
        predict_images(half, "s", images[cut:], ids=ids[cut:])
        stored.append(sorted(r.traffic_id for r in _traffic(half)))
    expected = sorted(i for i in ids if kept(i, 0.5))
    assert stored[0] == stored[1] == expected
    assert 10 <= len(expected) <= 30


def test_an_id_is_kept_once_the_first_time_it_is_served(sqlite_service) -> None:
    seeded_champion(sqlite_service)
    first, second = _images(1, seed=1), _images(1, seed=2)
    predict_images(sqlite_service, "s", first, ids=["same"], groups=["A"])
    predict_images(sqlite_service, "s", second, ids=["same"], groups=["B"])
    predict_images(sqlite_service, "s", first + first)  # one picture twice, no ids: once
    rows = _traffic(sqlite_service)
    assert len(rows) == 2
    assert (rows[0].traffic_id, rows[0].group) == ("same", "A")  # the first one served
    # The picture again without an id is named by its content: another name, kept once.
    assert rows[1].traffic_id == rows[1].content_digest == rows[0].content_digest
