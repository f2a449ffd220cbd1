"""A bare Celery app with a no-op task: the baseline of bench/ingest.py.

Same broker, serializer and acknowledgement settings as learnstream's ingest workers,
so the ratio isolates what learnstream's ingest itself costs.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("raw", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(stream: str = "default", samples: list | None = None) -> dict:
    """Receive the same payload as learnstream.ingest and do nothing with it."""
    return {"accepted": [], "duplicates": [], "rejected": [], "n": len(samples or [])}
