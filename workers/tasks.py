"""The tasks of the public contract: thin wrappers that call ``service`` and serialise results."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from service.context import get_service
from service.errors import StoreUnavailable
from service.ingest.samples import ingest_call
from service.ingest.windows import close_aged_windows
from service.models.serving import predict_images, preload_announced_champions
from service.pipeline.processor import process_pending
from service.samples.retention import apply_retention
from service.samples.retrain import retrain_without_deleted
from service.traffic.sweep import sweep_traffic
from workers.app import app, queue_windows

log = logging.getLogger(__name__)
_stop_preloading = threading.Event()

RETRY = {
    "autoretry_for": (StoreUnavailable,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 50,
}


@app.task(name="learnstream.ingest", acks_late=True, **RETRY)
def ingest_task(stream: Any = None, samples: Any = None, **unknown: Any) -> dict[str, Any]:
    """Validate and persist samples; queue ``process_window`` for every window this call closed.

    Without a stream the samples go to the setting ``default_stream``. A call that cannot be
    read is recorded and fails for good: retrying cannot mend it."""
    service = get_service()
    name = stream if stream is not None else service.settings.default_stream
    result = ingest_call(service.store, service.settings, name, samples, unknown)
    queue_windows(name, result.closed_windows)
    return result.to_dict()


@app.task(name="learnstream.sweep", acks_late=True, **RETRY)
def sweep_task() -> dict[str, Any]:
    """Close windows that grew too old and apply each stream's retention (run periodically by
    the beat of one worker); the windows closed and the deletions made, by stream, and the
    traffic's (traffic windows closed by age, traffic rows beyond their bounds)."""
    service = get_service()
    closed = close_aged_windows(service.store, service.settings)
    for stream, window_ids in closed.items():
        queue_windows(stream, window_ids)
    deleted = apply_retention(service)
    traffic = sweep_traffic(service.store, service.settings)
    for stream, numbers in traffic["closed"].items():  # tested for drift by the learner
        queue_windows(stream, numbers)
    return {
        "closed": closed,
        "deleted": {s: r.to_dict() for s, r in deleted.items()},
        "traffic": traffic,
    }


@app.task(name="learnstream.retrain", **RETRY)
def retrain_task(stream: str, deletion: int | None = None) -> dict[str, Any]:
    """Train a candidate without a deletion's samples and gate it against the champion."""
    return retrain_without_deleted(get_service(), stream, deletion).to_dict()


@app.task(name="learnstream.process_window", acks_late=True, **RETRY)
def process_window_task(stream: str) -> list[dict[str, Any]]:
    """Process the stream's closed windows in order (every pending one, not one named)."""
    return [o.to_dict() for o in process_pending(get_service(), stream)]


@app.task(name="learnstream.predict", acks_late=True, **RETRY)
def predict_task(
    stream: str | None = None, images: Any = None, ids: Any = None, groups: Any = None
) -> dict[str, Any]:
    """Predict with the stream's current champion (default: the setting ``default_stream``);
    ``ids`` and ``groups`` (optional, one per image) name the images kept as traffic. A
    traffic window it closes queues ``process_window``, whose learner tests it for drift."""
    service = get_service()
    name = stream if stream is not None else service.settings.default_stream
    return predict_images(
        service, name, images, ids=ids, groups=groups, on_traffic_closed=queue_windows
    )


@worker_process_init.connect
def _start_preloading(**_: Any) -> None:
    preload_announced_champions(get_service(), _stop_preloading)


@worker_process_shutdown.connect
def _stop_preloading_thread(**_: Any) -> None:
    _stop_preloading.set()
