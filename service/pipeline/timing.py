"""Seconds each stage of a window took, for the window's summary and the metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Collects the seconds of named stages; a stage that raises is timed too."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)

    def total(self) -> dict[str, float]:
        """The stages' seconds and the total since the stopwatch started (not rounded)."""
        return {**self.seconds, "total": time.perf_counter() - self.started}
