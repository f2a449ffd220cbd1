"""Prediction with the current champion, hot-swapped when the champion pointer changes."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from typing import Any

import torch

from learners.evaluation import predict
from learners.models import to_float
from service.config import Settings
from service.context import Service
from service.errors import InvalidRequest, InvalidSample, ModelNotFound
from service.ingest.images import decode, to_input
from service.ingest.samples import check_text
from service.models.registry import ANNOUNCE_CHANNEL
from service.store.schema import Stream
from service.streams.configuration import StreamConfigInvalid, settings_for
from service.traffic.capture import Served
from service.traffic.writer import OnClosed, capture_and_hand_on, traffic_writer

log = logging.getLogger(__name__)


def settings_in_force(settings: Settings, stream: Stream) -> Settings:
    """The stream's settings for its traffic; the global ones when its configuration cannot
    be used (a prediction does not fail over its traffic's settings)."""
    try:
        return settings_for(settings, stream)
    except StreamConfigInvalid:
        log.exception(
            "traffic: the stream's settings cannot be used", extra={"stream": stream.name}
        )
        return settings


def per_image(name: str, values: Any, count: int, max_length: int) -> list[str] | None:
    """The optional ``ids`` or ``groups`` of a predict call: ``None``, or one non-empty string
    per image (ids distinct); raises :class:`InvalidRequest` naming the field.

    >>> per_image("groups", ["a", "b"], 2, 64)
    ['a', 'b']
    >>> per_image("ids", ["x"], 2, 128)
    Traceback (most recent call last):
    ...
    service.errors.InvalidRequest: ids: 1 given for 2 images (one per image)
    """
    if values is None:
        return None
    if not isinstance(values, list):
        raise InvalidRequest(f"{name}: must be a list of strings, one per image")
    if len(values) != count:
        raise InvalidRequest(f"{name}: {len(values)} given for {count} images (one per image)")
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        try:
            check_text(f"{name}[{index}]", value, max_length)
        except InvalidSample as exc:
            raise InvalidRequest(str(exc)) from None
        if name == "ids" and value in seen:
            raise InvalidRequest(f"ids[{index}]: repeats ids[{seen[value]}]")
        seen.setdefault(value, index)
    return list(values)


def predict_images(
    service: Service,
    stream_name: str,
    images: Any,
    ids: Any = None,
    groups: Any = None,
    on_traffic_closed: OnClosed | None = None,
) -> dict[str, Any]:
    """Labels and class scores of base64 images under the stream's champion (the contract);
    ``classes`` names the scores, in order.

    ``ids`` and ``groups`` (optional, one per image) name the images and their groups in
    the stream's traffic (:mod:`service.traffic.capture`), kept after the answer is
    computed; a late labelled sample of the same id is joined to what was served.
    ``on_traffic_closed(stream, windows)`` is told of the traffic windows this call closed
    (the task and the API queue the learner, which tests them for drift)."""
    if not isinstance(images, list) or not images:
        raise InvalidRequest("images: must be a non-empty list of base64 strings")
    if len(images) > service.settings.max_samples_per_call:
        raise InvalidRequest(
            f"images: {len(images)} exceed the limit of {service.settings.max_samples_per_call}"
        )
    ids = per_image("ids", ids, len(images), service.settings.max_id_length)
    groups = per_image("groups", groups, len(images), service.settings.max_group_length)
    with service.store.session() as session:
        stream = service.store.stream(session, stream_name)
    version = service.registry.champion(stream.id)
    if version is None:
        raise ModelNotFound(f"stream {stream_name!r} has no champion yet")
    champion = service.version(stream_name, version)
    tensors = []
    for index, value in enumerate(images):
        try:
            data = base64.b64decode(value, validate=True) if isinstance(value, str) else None
        except (binascii.Error, ValueError):
            data = None
        if not data:
            raise InvalidSample(f"images[{index}]: not valid base64")
        if len(data) > service.settings.max_image_bytes:
            raise InvalidSample(
                f"images[{index}]: more than {service.settings.max_image_bytes} bytes"
            )
        try:
            image = decode(data, max_pixels=service.settings.max_image_pixels)
            tensors.append(to_input(image, channels=stream.channels, size=stream.size))
        except InvalidSample as exc:
            raise InvalidSample(f"images[{index}]: {exc}") from exc
    labels, probs = predict(champion.model, to_float(torch.stack(tensors)))
    # A class added since this champion was trained has no score yet: its classes are those.
    classes = [str(c) for c in stream.classes][: probs.shape[1]]
    in_force = settings_in_force(service.settings, stream)
    if in_force.traffic_capture > 0.0:
        served = Served(
            stream=stream,
            version=version,
            pixels=[t.numpy().tobytes() for t in tensors],
            predicted=[int(i) for i in labels],
            probability=[float(row[int(i)]) for i, row in zip(labels, probs, strict=True)],
            ids=ids,
            groups=groups,
        )
        if in_force.traffic_capture_mode == "background":
            traffic_writer(service.store).submit(in_force, served, on_traffic_closed)
        else:
            capture_and_hand_on(service.store, in_force, served, on_traffic_closed)
    return {
        "model_version": version,
        "classes": classes,
        "predictions": [
            {"label": classes[int(i)], "scores": [round(float(p), 6) for p in row]}
            for i, row in zip(labels, probs, strict=True)
        ],
    }


def preload_announced_champions(service: Service, stop: threading.Event) -> threading.Thread | None:
    """Load each announced champion into the cache in a daemon thread (until ``stop``).

    Without it the first prediction after a swap loads the model itself; with it the
    swap costs requests nothing. Returns ``None`` when no announcement channel is set.
    """
    url = service.settings.announce_url
    if url is None:
        return None
    import redis

    def listen() -> None:
        pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(ANNOUNCE_CHANNEL)
        while not stop.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            try:
                event = json.loads(message["data"])
                with service.store.session() as session:
                    stream = session.get(Stream, event["stream_id"])
                if stream is not None:
                    service.version(stream.name, int(event["version"]))
            except Exception:  # a bad announcement must not kill the listener
                log.exception("could not preload an announced champion")
        pubsub.close()

    thread = threading.Thread(target=listen, name="champion-preload", daemon=True)
    thread.start()
    return thread
