"""The Celery app, declared once; configured from :class:`service.config.Settings` on first use."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from service.config import Settings, load_settings, mask_url
from service.errors import StartupCheckFailed

QUEUES = ("ingest", "learn", "predict")
ROUTES = {
    "learnstream.ingest": {"queue": "ingest"},
    "learnstream.process_window": {"queue": "learn"},
    "learnstream.predict": {"queue": "predict"},
    "learnstream.sweep": {"queue": "learn"},
    "learnstream.retrain": {"queue": "learn"},
}

app = Celery("learnstream", include=["workers.tasks"])

MEMORY_BROKER = (
    "LEARNSTREAM_BROKER_URL is memory:// (the default), which lives inside one process: no "
    "producer can reach a worker on it; set a shared broker, e.g. "
    "LEARNSTREAM_BROKER_URL=redis://127.0.0.1:6379/0 (`learnstream run` plays the demo in one "
    "process)"
)
STORE_DOWN = "store: cannot use the database {url}: {reason}"
BROKER_DOWN = "broker: cannot connect to {url}: {reason}"
BROKER_TIMEOUT = 5.0  # seconds a worker's start-up check waits for the broker


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
        # The sweep's last-run file lives in the home, not in whatever folder the worker ran.
        "beat_schedule_filename": str(settings.home / "celerybeat-schedule"),
    }


def configure(settings: Settings) -> Celery:
    """Apply ``settings`` to the app (the CLI and tests call this before starting anything).

    Connections, producers and the result backend that an earlier configuration of this
    process opened are forgotten, so that nothing is sent to a broker configured before.
    """
    app.conf.update(celery_config(settings))
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()
    return app


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (drivers add hints on later lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def check_broker(settings: Settings) -> None:
    """Refuse the in-process broker and one that cannot be reached, in one line each."""
    from kombu import Connection

    url = settings.broker_url
    if url.startswith("memory://"):
        raise StartupCheckFailed(MEMORY_BROKER)
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT) as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
            )
    except Exception as exc:  # any failure (refused, unknown transport, bad URL) is the reason
        raise StartupCheckFailed(
            BROKER_DOWN.format(url=mask_url(url), reason=_first_line(exc))
        ) from exc


def check_store(settings: Settings) -> None:
    """Connect to the store and bring its schema to the code's revision, or say why not.

    The engine is disposed afterwards, so that forked worker processes open their own.
    """
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from service.errors import StoreUnavailable
    from service.store.engine import Store

    url = settings.resolved_database_url
    store = None
    try:
        store = Store(url)
        store.create_schema()
    except StoreUnavailable as exc:
        reason = _first_line(getattr(exc.__cause__, "orig", None) or exc)
        raise StartupCheckFailed(STORE_DOWN.format(url=mask_url(url), reason=reason)) from exc
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise StartupCheckFailed(
            STORE_DOWN.format(url=mask_url(url), reason=_first_line(exc))
        ) from exc
    finally:
        if store is not None:
            store.dispose()


def queue_windows(stream: str, window_ids: list[int]) -> None:
    """Queue ``learnstream.process_window`` for each window an ingest call or the sweep
    closed: the one path of the ingest and sweep tasks and of ``learnstream api``."""
    for _ in window_ids:  # one message per window: a failed run is retried by the next one
        app.send_task("learnstream.process_window", kwargs={"stream": stream})


# Lazy defaults from the environment, read on the first access to ``app.conf`` (never at
# import time); ``configure`` overrides them explicitly.
app.add_defaults(lambda: celery_config(load_settings()))


def queue_retrain(stream: str, deletion: int | None) -> str:
    """Queue ``learnstream.retrain`` (a candidate trained without a deletion's samples) for
    the stream's learner; returns the task id."""
    result = app.send_task("learnstream.retrain", kwargs={"stream": stream, "deletion": deletion})
    return str(result.id)
