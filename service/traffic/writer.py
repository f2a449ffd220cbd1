"""The background writer: captures handed off the prediction path.

A prediction's answer must not wait for its traffic to be stored (a transaction, an fsync:
about half of a one-image call on SQLite). With ``traffic_capture_mode="background"`` (the
default) predict puts what it served on a bounded in-process queue and one daemon thread per
store writes it (:func:`service.traffic.capture.capture_quietly`), then tells
``on_closed`` of the traffic windows it closed, on that thread: ``on_closed`` must be quick
(the task and the API queue ``learnstream.process_window``), or the queue backs up. The
queue is the capture's rate bound: when ``traffic_capture_queue`` calls are waiting, a
call's images are dropped and counted (``learnstream_traffic_dropped_total``), never the
prediction. Traffic is a sample of what
was served, not data the service learns from: what the queue holds when the process dies
is lost, and at exit the writer drains it for up to :data:`EXIT_DRAIN` seconds.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.config import Settings
from service.store.engine import Store

if TYPE_CHECKING:  # capture decodes with ingest's helpers, which bring torch
    from service.traffic.capture import Served

log = logging.getLogger(__name__)
EXIT_DRAIN = 5.0
OnClosed = Callable[[str, list[int]], None]


def capture_and_hand_on(
    store: Store, settings: Settings, served: Served, on_closed: OnClosed | None
) -> None:
    """Keep ``served`` (never failing) and tell ``on_closed`` of the traffic windows it
    closed: what the writer does with each call, and predict itself in inline mode."""
    from service.traffic.capture import capture_quietly

    captured = capture_quietly(store, settings, served)
    if captured.closed and on_closed is not None:
        on_closed(served.stream.name, list(captured.closed))


@dataclass(frozen=True)
class _Job:
    settings: Settings
    served: Served
    on_closed: OnClosed | None


class TrafficWriter:
    """One store's queue of captures and the daemon thread that writes them, in order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dropped = 0  # images dropped because the queue was full
        self._queue: queue.Queue[_Job] | None = None
        self._pid = 0  # the process whose thread drains the queue (a fork has none)
        self._lock = threading.Lock()

    def submit(self, settings: Settings, served: Served, on_closed: OnClosed | None) -> bool:
        """Queue one call's capture; False (its images dropped and counted) when full."""
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue, self._pid = queue.Queue(settings.traffic_capture_queue), os.getpid()
                threading.Thread(target=self._run, name="traffic-writer", daemon=True).start()
        try:
            self._queue.put_nowait(_Job(settings, served, on_closed))
            return True
        except queue.Full:
            self.dropped += len(served.pixels)
            log.warning(
                "traffic: the capture queue is full; a call's images were not kept",
                extra={"stream": served.stream.name, "dropped_total": self.dropped},
            )
            return False

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued capture is written; False on timeout."""
        done = threading.Event()

        def wait() -> None:
            if self._queue is not None:
                self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            try:
                capture_and_hand_on(self.store, job.settings, job.served, job.on_closed)
            except Exception:
                log.exception("traffic: closed windows could not be handed on")
            finally:
                self._queue.task_done()


_writers: weakref.WeakKeyDictionary[Store, TrafficWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def traffic_writer(store: Store) -> TrafficWriter:
    """The store's background writer (one per store and process)."""
    with _writers_lock:
        writer = _writers.get(store)
        if writer is None:
            writer = _writers[store] = TrafficWriter(store)
        return writer


def dropped_total(store: Store) -> int:
    """Images this process dropped for ``store`` (0 when it never captured)."""
    writer = _writers.get(store)
    return writer.dropped if writer is not None else 0


def flush_traffic(store: Store, timeout: float = 30.0) -> bool:
    """Wait until the store's queued captures are written (tests, shutdown)."""
    return traffic_writer(store).flush(timeout)


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_writers.values()):
        writer.flush(EXIT_DRAIN)
