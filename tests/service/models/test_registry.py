"""The registry: atomic versions, digests, the champion pointer, hot swap for predict."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import pytest
import torch
from helpers import digit_samples

from learners.models import build_model
from learners.strategy_state import StrategyState
from service.context import Service
from service.errors import ModelNotFound
from service.ingest.samples import get_or_create_stream
from service.models.serving import predict_images
from service.queries.listings import list_models
from service.store.schema import Stream

ARCH = {"n_classes": 10, "in_channels": 1, "input_size": 28}


def _write(service: Service, stream: Stream, seed: int, parent: int | None = None) -> int:
    model = build_model(seed=seed, **ARCH)
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    return service.registry.create_version(
        stream, model, state, parent=parent, strategy="naive", params={}, windows=[1], arch=ARCH
    )


def test_versions_are_written_whole_and_read_back(service) -> None:
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    version = _write(service, stream, seed=1)
    folder = service.registry.folder("s", version)
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "state.safetensors",
    ]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["arch"] == ARCH
    loaded = service.registry.load("s", version)
    original = build_model(seed=1, **ARCH)
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)
    assert list_models(service, "s")[0]["status"] == "candidate"


def test_a_crash_while_writing_leaves_nothing_visible(service, monkeypatch) -> None:
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    import service.models.registry as registry

    def broken_save(*args: Any, **kwargs: Any) -> NoReturn:
        raise OSError("disk full")

    monkeypatch.setattr(registry, "save_state", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _write(service, stream, seed=1)
    assert list((service.registry.model_dir / "s").iterdir()) == []
    assert list_models(service, "s") == []


def test_tampered_files_are_refused(service) -> None:
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    version = _write(service, stream, seed=1)
    path = service.registry.folder("s", version) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelNotFound, match="does not match its digest"):
        service.registry.load("s", version)


def test_promotion_moves_the_pointer_and_predict_follows_without_restart(service) -> None:
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    v1, v2 = _write(service, stream, seed=1), _write(service, stream, seed=2, parent=1)
    image = digit_samples(1)[0]["image"]
    with pytest.raises(ModelNotFound, match="has no champion yet"):
        predict_images(service, "s", [image])
    assert service.registry.promote(stream.id, v1, by="test", reason="first") is None
    first = predict_images(service, "s", [image])
    assert first["model_version"] == 1
    assert service.registry.promote(stream.id, v2, by="ops", reason="better") == 1
    second = predict_images(service, "s", [image])
    assert second["model_version"] == 2
    assert first["predictions"][0]["scores"] != second["predictions"][0]["scores"]
    statuses = {m["version"]: m["status"] for m in list_models(service, "s")}
    assert statuses == {1: "retired", 2: "champion"}
    with pytest.raises(ModelNotFound, match="no version 9"):
        service.registry.promote(stream.id, 9, by="ops", reason="typo")


def test_swaps_are_announced_on_redis(tmp_path) -> None:
    import redis
    from helpers import REDIS_URL, make_settings

    from service.context import Service
    from service.models.registry import ANNOUNCE_CHANNEL

    url = f"{REDIS_URL}/11"
    svc = Service.from_settings(make_settings(tmp_path, redis_url=url))
    stream = get_or_create_stream(svc.store, "s", svc.settings).stream
    version = _write(svc, stream, seed=1)
    subscriber = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(ANNOUNCE_CHANNEL)
    subscriber.get_message(timeout=1.0)
    svc.registry.promote(stream.id, version, by="test", reason="announce")
    message = subscriber.get_message(timeout=5.0)
    assert message is not None
    announced = json.loads(message["data"])
    folder = svc.registry.folder("s", 1)
    digest = json.loads((folder / "manifest.json").read_text())["digests"]["model.safetensors"]
    assert announced == {
        "event": "model.promoted",
        "stream": "s",
        "stream_id": stream.id,
        "version": 1,
        "previous": None,
        "digest": digest,
        "artifact": str(folder / "model.safetensors"),
        "by": "test",
        "reason": "announce",
    }
    subscriber.close()
    svc.close()


def test_announced_champions_are_preloaded(tmp_path) -> None:
    import threading
    import time

    from helpers import REDIS_URL, make_settings

    from service.context import Service
    from service.models.serving import preload_announced_champions

    url = f"{REDIS_URL}/11"
    svc = Service.from_settings(make_settings(tmp_path, redis_url=url))
    stream = get_or_create_stream(svc.store, "s", svc.settings).stream
    version = _write(svc, stream, seed=1)
    stop = threading.Event()
    thread = preload_announced_champions(svc, stop)
    time.sleep(0.5)  # let it subscribe
    svc.registry.promote(stream.id, version, by="test", reason="preload")
    deadline = time.monotonic() + 10
    while ("s", version) not in svc._versions and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert ("s", version) in svc._versions
    svc.close()


def test_a_retry_discards_what_a_dead_attempt_left(service) -> None:
    stream = get_or_create_stream(service.store, "s", service.settings).stream
    model = build_model(seed=1, **ARCH)
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})

    def write(windows: list[int]) -> int:
        return service.registry.create_version(
            stream,
            model,
            state,
            parent=None,
            strategy="naive",
            params={},
            windows=windows,
            arch=ARCH,
        )

    champion, undecided, other = write([1]), write([2]), write([3])
    service.registry.promote(stream.id, champion, by="test", reason="first")
    folder = service.registry.model_dir / "s"
    (folder / ".tmp-v0004-cut-short").mkdir()
    (folder / ".tmp-v0004-cut-short" / "model.safetensors").write_bytes(b"half")
    (folder / "v0009").mkdir()  # renamed into place, never registered
    assert service.registry.discard_unfinished(stream, 2) == [undecided]
    assert sorted(p.name for p in folder.iterdir()) == ["v0001", "v0003"]
    statuses = {m["version"]: m["status"] for m in list_models(service, "s")}
    assert statuses == {champion: "champion", other: "candidate"}  # another window's stays
    assert write([2]) == 4  # numbers go on from the highest registered version
    assert service.registry.discard_unfinished(stream, 9) == []
    assert sorted(p.name for p in folder.iterdir()) == ["v0001", "v0003", "v0004"]


def test_a_loaded_version_of_a_stream_recreated_by_another_process_is_read_again(
    service, tmp_path
) -> None:
    from service.store.removal import delete_stream

    stream = get_or_create_stream(service.store, "s", service.settings).stream
    assert _write(service, stream, seed=1) == 1
    before = service.version("s", 1).model.state_dict()
    other_process = Service(service.settings, type(service.store)(service.store.url))
    try:
        assert delete_stream(other_process.store, service.settings.resolved_model_dir, "s")
        recreated = get_or_create_stream(other_process.store, "s", service.settings).stream
        assert _write(other_process, recreated, seed=2) == 1
    finally:
        other_process.store.dispose()
    after = service.version("s", 1).model.state_dict()
    expected = build_model(seed=2, **ARCH).state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in expected.items())
    assert not all(torch.equal(after[name], before[name]) for name in expected)


def test_predict_decodes_as_ingest_does_and_refuses_a_broken_image_in_our_words(service) -> None:
    import base64

    from service.errors import InvalidSample

    stream = get_or_create_stream(service.store, "s", service.settings).stream
    service.registry.promote(stream.id, _write(service, stream, seed=1), by="test", reason="r")
    image = digit_samples(1)[0]["image"]
    assert len(predict_images(service, "s", [image])["predictions"]) == 1
    cut = base64.b64encode(base64.b64decode(image)[:60]).decode()
    with pytest.raises(InvalidSample) as refused:
        predict_images(service, "s", [image, cut])
    assert str(refused.value) == "images[1]: image: PNG data cannot be decoded (truncated)"
