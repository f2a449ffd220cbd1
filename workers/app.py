"""The Celery app, declared once; configured from :class:`service.config.Settings` on first use."""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.config import Settings

QUEUES = ("ingest", "learn", "predict")
ROUTES = {
    "learnstream.ingest": {"queue": "ingest"},
    "learnstream.process_window": {"queue": "learn"},
    "learnstream.predict": {"queue": "predict"},
    "learnstream.sweep": {"queue": "learn"},
}

app = Celery("learnstream", include=["workers.tasks"])


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith("memory://"):
        # The in-process broker is polled; kombu's default of one second per poll would
        # dominate the embedded run.
        return {"polling_interval": 0.01}
    return {
        "visibility_timeout": settings.broker_visibility_timeout,
        # kombu scans for expired unacknowledged messages on every 10th tick of 10 s; one
        # scan per interval makes redelivery after a lost worker or broker timely.
        "unacked_restore_interval": settings.broker_restore_interval,
        "unacked_restore_throttle": 1,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one message prefetched per process."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_routes": ROUTES,
        "task_default_queue": "ingest",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": _transport_options(settings),
        "result_expires": 86400,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "close-aged-windows": {"task": "learnstream.sweep", "schedule": settings.sweep_interval}
        },
    }


def configure(settings: Settings) -> Celery:
    """Apply ``settings`` to the app (the CLI and tests call this before starting anything)."""
    app.conf.update(celery_config(settings))
    return app


def queue_windows(stream: str, window_ids: list[int]) -> None:
    """Queue ``learnstream.process_window`` for each window an ingest call or the sweep
    closed: the one path of the ingest and sweep tasks and of ``learnstream api``."""
    for _ in window_ids:  # one message per window: a failed run is retried by the next one
        app.send_task("learnstream.process_window", kwargs={"stream": stream})


# Lazy defaults from the environment, read on the first access to ``app.conf`` (never at
# import time); ``configure`` overrides them explicitly.
app.add_defaults(lambda: celery_config(Settings()))
