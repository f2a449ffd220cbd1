"""Two worker processes (two children each) ingest and learn four streams at once on Redis
and PostgreSQL.

Every sample lands in exactly one window, every window closes once at full size, and every
window is processed exactly once (one set of drift reports each), in order within its
stream, while different streams are processed at the same time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import redis
from celery import Celery
from helpers import REDIS_URL, digit_samples, make_settings
from sqlalchemy import func, select

from service.context import Service
from service.queries.listings import status
from service.store.schema import DriftReport, Sample, Window

DB = 15
WINDOW = 32
STREAMS = ("c0", "c1", "c2", "c3")
WINDOWS = 4  # per stream


def test_concurrent_ingest_windows_and_learning(tmp_path: Path, pg_database: str) -> None:
    from service.store.schema import Base

    url = f"{REDIS_URL}/{DB}"
    redis.Redis.from_url(url).flushdb()
    service = Service.from_settings(make_settings(tmp_path, pg_database))
    Base.metadata.drop_all(service.store.engine)  # a clean schema in the session database
    with service.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    service.store.create_schema()
    env = {
        **os.environ,
        "LEARNSTREAM_HOME": str(tmp_path / "home"),
        "LEARNSTREAM_DATABASE_URL": pg_database,
        "LEARNSTREAM_BROKER_URL": url,
        "LEARNSTREAM_RESULT_BACKEND": url,
        "LEARNSTREAM_WINDOW_SIZE": str(WINDOW),
        "LEARNSTREAM_BOOTSTRAP_SAMPLES": "40",
        "LEARNSTREAM_BOOTSTRAP_EPOCHS": "2",
        "LEARNSTREAM_MIN_BOOTSTRAP_ACCURACY": "0.0",
        "LEARNSTREAM_DRIFT_PERMUTATIONS": "100",
    }
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                "-Q",
                "ingest,learn",
                "-c",
                "2",
                "-n",
                f"w{i}@%h",
                "--loglevel",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(2)
    ]
    producer = Celery("producer", broker=url, backend=url)
    samples = digit_samples(WINDOW * WINDOWS * len(STREAMS), seed=21)
    # Calls of 8 samples, the streams' calls interleaved.
    calls = [
        (STREAMS[(i // 8) % len(STREAMS)], samples[i : i + 8]) for i in range(0, len(samples), 8)
    ]
    try:

        def send(call):  # type: ignore[no-untyped-def]
            stream, batch = call
            return producer.send_task(
                "learnstream.ingest", kwargs={"stream": stream, "samples": batch}, queue="ingest"
            ).get(timeout=180)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, calls))
        deadline = time.monotonic() + 240

        def processed() -> int:
            streams = status(service)["streams"]
            return sum(streams.get(s, {}).get("windows", {}).get("processed", 0) for s in STREAMS)

        while processed() < WINDOWS * len(STREAMS):
            assert time.monotonic() < deadline, status(service)
            time.sleep(0.5)
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
    assert sum(len(a["accepted"]) for a in answers) == len(samples)
    with service.store.session() as session:
        windows = session.execute(
            select(
                Window.id,
                Window.stream_id,
                Window.seq,
                Window.size,
                Window.state,
                Window.claimed_at,
                Window.processed_at,
            ).order_by(Window.stream_id, Window.seq)
        ).all()
        per_window = dict(
            session.execute(select(Sample.window_id, func.count()).group_by(Sample.window_id)).all()
        )
        reports = session.execute(
            select(DriftReport.window_id, DriftReport.kind, func.count()).group_by(
                DriftReport.window_id, DriftReport.kind
            )
        ).all()
        seqs = session.execute(select(Sample.stream_id, Sample.seq).order_by(Sample.seq)).all()
    by_stream: dict[int, list] = {}
    for w in windows:
        by_stream.setdefault(w.stream_id, []).append(w)
    assert len(by_stream) == len(STREAMS)
    for rows in by_stream.values():
        assert [w.seq for w in rows] == list(range(1, WINDOWS + 1))
        # In order within a stream: each window's processing began after the one before ended.
        assert all(a.processed_at <= b.claimed_at for a, b in pairwise(rows))
    assert all(w.size == WINDOW and w.state == "processed" for w in windows)
    # In parallel across streams: some windows of two streams were being processed at once.
    overlaps = sum(
        1
        for a in windows
        for b in windows
        if a.stream_id < b.stream_id
        and a.claimed_at < b.processed_at
        and b.claimed_at < a.processed_at
    )
    print(f"pairs of windows of two streams processed at the same time: {overlaps}")
    assert overlaps > 0
    assert all(per_window[w.id] == WINDOW for w in windows)  # each sample in one window
    for stream_id in by_stream:
        numbers = [seq for sid, seq in seqs if sid == stream_id]
        assert numbers == list(range(1, WINDOW * WINDOWS + 1))
    # Processed once each: never two reports of one kind for a window.
    assert all(n == 1 for _, _, n in reports), reports
    scored = {window_id for window_id, kind, _ in reports if kind == "label"}
    assert len(scored) >= len(STREAMS) * (WINDOWS - 2), reports
    service.close()
