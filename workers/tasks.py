"""The tasks of the public contract: thin wrappers that call ``service`` and serialise results."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from service.context import get_service
from service.errors import InvalidRequest, StoreUnavailable
from service.ingest.samples import close_aged_windows, ingest, record_rejections
from service.models.serving import predict_images, preload_announced_champions
from service.pipeline.processor import process_pending
from workers.app import app

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
def ingest_task(stream: Any = "default", samples: Any = None, **unknown: Any) -> dict[str, Any]:
    """Validate and persist samples; queue ``process_window`` for every window this call closed."""
    service = get_service()
    try:
        if unknown:
            raise InvalidRequest(f"unknown argument(s): {', '.join(sorted(unknown))}")
        if samples is None:
            raise InvalidRequest("samples: missing")
        result = ingest(service.store, service.settings, stream, samples)
    except InvalidRequest as exc:
        # A call that cannot be read is recorded and fails for good: retrying cannot mend it.
        name = stream if isinstance(stream, str) else None
        record_rejections(service.store, name, None, [{"index": None, "reason": str(exc)}])
        raise
    _queue_windows(stream, result.closed_windows)
    return result.to_dict()


def _queue_windows(stream: str, window_ids: list[int]) -> None:
    for window_id in window_ids:
        process_window_task.apply_async(kwargs={"stream": stream, "window": window_id})


@app.task(name="learnstream.sweep", acks_late=True, **RETRY)
def sweep_task() -> dict[str, list[int]]:
    """Close windows that grew too old (run periodically by the beat of one worker)."""
    closed = close_aged_windows(get_service().store, get_service().settings)
    for stream, window_ids in closed.items():
        _queue_windows(stream, window_ids)
    return closed


@app.task(name="learnstream.process_window", acks_late=True, **RETRY)
def process_window_task(stream: str, window: int | None = None) -> list[dict[str, Any]]:
    """Process the stream's closed windows in order (``window`` is a hint; all pending are done)."""
    return [o.to_dict() for o in process_pending(get_service(), stream)]


@app.task(name="learnstream.predict", acks_late=True, **RETRY)
def predict_task(stream: str = "default", images: Any = None) -> dict[str, Any]:
    """Predict with the stream's current champion."""
    return predict_images(get_service(), stream, images)


@worker_process_init.connect
def _start_preloading(**_: Any) -> None:
    preload_announced_champions(get_service(), _stop_preloading)


@worker_process_shutdown.connect
def _stop_preloading_thread(**_: Any) -> None:
    _stop_preloading.set()
