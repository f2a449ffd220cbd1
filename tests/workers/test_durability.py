"""kill -9 an ingest worker in the middle of a stream of calls: nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from celery import Celery
from helpers import digit_samples, worker_env

from service.config import Settings
from service.context import Service
from service.queries.listings import status

DB = 14


def _worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "-Q",
            "ingest",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_kill_9_of_an_ingest_worker_loses_and_doubles_nothing(tmp_path: Path) -> None:
    env = worker_env(tmp_path / "home", DB, BROKER_VISIBILITY_TIMEOUT="5", WINDOW_SIZE="100000")
    url = env["LEARNSTREAM_BROKER_URL"]
    producer = Celery("producer", broker=url, backend=url)
    samples = digit_samples(40 * 16, seed=11)
    calls = [samples[i : i + 16] for i in range(0, len(samples), 16)]
    worker = _worker(env)
    try:
        results = []
        for k, call in enumerate(calls):
            results.append(
                producer.send_task(
                    "learnstream.ingest", kwargs={"stream": "d", "samples": call}, queue="ingest"
                )
            )
            if k == 12:
                results[0].get(timeout=120)  # the worker is up and busy
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
                worker = _worker(env)
        answers = [r.get(timeout=180) for r in results]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    accepted = {i for a in answers for i in a["accepted"]}
    duplicates = {i for a in answers for i in a["duplicates"]}
    assert accepted | duplicates == {s["id"] for s in samples}
    service = Service.from_settings(Settings(home=tmp_path / "home"))
    stored = status(service)["streams"]["d"]["samples"]
    assert stored == len(samples)  # every sample exactly once (ids are unique in the store)
    service.close()
