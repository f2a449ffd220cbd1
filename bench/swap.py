"""Hot swap under load: predictions from a separate process while the champion is swapped.

The production path of a swap, on the real Redis and PostgreSQL: a predict worker
(``learnstream worker -Q predict -c 2``, a real Celery worker whose processes listen on the
``learnstream:champion`` channel and preload each announced champion) serves
``learnstream.predict``; a load generator in a separate process (``THREADS`` threads, each
sending a call of ``IMAGES`` PNG digits and waiting for the answer, back to back) keeps it
busy; this process swaps the champion ``--swaps`` times, every ``--interval`` seconds, with
``Registry.promote`` (one transaction on the pointer, then the announcement), exactly as the
learner or an operator does. The versions are SmallCNNs with different seeds, all written
through the registry before the load starts.

Measured: ``requests`` answered or failed; ``failed_requests`` (an error or no answer within
10 s, or an answer from a version that was never champion); and, per swap, the time from the
promotion (taken just before ``promote`` is called, so the transaction's own time counts)
to the arrival, in the load process, of the first answer served by the new version;
``max_seconds_to_serve_new`` is the largest. Also reported: answers from an older version
to calls sent after ``promote`` returned (``stale``), which the per-call pointer check
should keep at zero.

    .venv/bin/python bench/swap.py [--swaps 10] [--interval 1.5]

The last line of stdout is one JSON object; the lines before it are progress.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_DB = 9
STREAM = "swap"
THREADS = 4
IMAGES = 4
TIMEOUT = 10.0


def progress(message: str) -> None:
    print(f"[swap] {message}", flush=True)


def images() -> list[str]:
    """A few digits as base64 PNGs of 28x28."""
    from service.demo.stream import digits, to_png_base64

    x, _ = digits(28)
    return [to_png_base64(x[i]) for i in range(IMAGES)]


def load(broker: str, payload: list[str], stop, out) -> None:  # type: ignore[no-untyped-def]
    """The load process: ``THREADS`` threads calling predict back to back until ``stop``."""
    from celery import Celery

    records: list[tuple[float, float, int | None, str | None]] = []
    lock = threading.Lock()

    def caller(k: int) -> None:
        client = Celery(f"load{k}", broker=broker, backend=broker)
        client.conf.update(task_serializer="json", accept_content=["json"])
        while not stop.is_set():
            sent = time.time()
            try:
                answer = client.send_task(
                    "learnstream.predict",
                    kwargs={"stream": STREAM, "images": payload},
                    queue="predict",
                ).get(timeout=TIMEOUT, interval=0.005)
                version, error = int(answer["model_version"]), None
                if len(answer["predictions"]) != len(payload):
                    error = f"{len(answer['predictions'])} predictions for {len(payload)} images"
            except Exception as exc:  # every failure is counted, none stops the load
                version, error = None, f"{type(exc).__name__}: {exc}"
            with lock:
                records.append((sent, time.time(), version, error))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(records)


def wait_ready(broker: str, timeout: float = 180.0) -> None:
    from celery import Celery

    client = Celery("ping", broker=broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.control.ping(timeout=1.0):
            return
    raise TimeoutError("the predict worker did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between swaps")
    args = parser.parse_args()

    import psycopg
    import redis

    from learners.models import build_model
    from learners.strategy_state import StrategyState
    from service.config import Settings
    from service.context import Service
    from service.ingest.samples import get_or_create_stream

    started = time.perf_counter()
    db_name = f"learnstream_bench_swap_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    broker = f"{REDIS}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    home = Path(f"/tmp/{db_name}")
    database_url = (
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{db_name}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSTREAM_")}
    env |= {
        "LEARNSTREAM_BROKER_URL": broker,
        "LEARNSTREAM_RESULT_BACKEND": broker,
        "LEARNSTREAM_DATABASE_URL": database_url,
        "LEARNSTREAM_HOME": str(home),
    }
    service = Service.from_settings(
        Settings(home=home, database_url=database_url, broker_url=broker, result_backend=broker)
    )
    stream = get_or_create_stream(service.store, STREAM, service.settings).stream
    arch = {"n_classes": 10, "in_channels": 1, "input_size": 28}
    versions = []
    for seed in range(args.swaps + 1):
        state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
        versions.append(
            service.registry.create_version(
                stream,
                build_model(seed=seed, **arch),
                state,
                parent=versions[-1] if versions else None,
                strategy="naive",
                params={},
                windows=[],
                arch=arch,
            )
        )
    service.registry.promote(stream.id, versions[0], by="bench", reason="start")
    progress(f"{len(versions)} versions written; v{versions[0]} serves")

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            *("-Q", "predict", "-c", "2"),
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    load_process = None
    swaps: list[tuple[int, float, float]] = []  # version, before promote, after promote
    try:
        wait_ready(broker)
        payload = images()
        load_process = ctx.Process(target=load, args=(broker, payload, stop, out))
        load_process.start()
        time.sleep(3.0)  # the load runs, every worker process has served v1
        for version in versions[1:]:
            before = time.time()
            service.registry.promote(stream.id, version, by="bench", reason="swap under load")
            swaps.append((version, before, time.time()))
            time.sleep(args.interval)
        stop.set()
        records = out.get(timeout=120)
        load_process.join(timeout=60)
    finally:
        stop.set()
        if load_process is not None and load_process.is_alive():
            load_process.terminate()
        worker.terminate()
        worker.wait(timeout=60)
        service.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)

    known = set(versions)
    failed = [r for r in records if r[3] is not None or r[2] not in known]
    for r in failed[:5]:
        progress(f"failed: version {r[2]}, {r[3]}")
    delays, stale = [], 0
    for k, (version, before, after) in enumerate(swaps):
        served = [received for _, received, v, _ in records if v == version]
        delay = (min(served) - before) if served else float("inf")
        delays.append(delay)
        older = set(versions[: versions.index(version)])
        until = swaps[k + 1][1] if k + 1 < len(swaps) else float("inf")
        stale += sum(1 for sent, _, v, _ in records if after < sent < until and v in older)
        progress(f"v{version}: first answer from it {delay * 1000:.0f} ms after the promotion")
    latencies = sorted(received - sent for sent, received, _, e in records if e is None)
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    progress(
        f"{len(records)} calls of {IMAGES} images from {THREADS} threads, median "
        f"{p50 * 1000:.0f} ms; {len(failed)} failed; {stale} stale answers (older version to a "
        f"call sent after the promotion returned); wall {time.perf_counter() - started:.0f} s"
    )
    print(
        json.dumps(
            {
                "bench": "swap",
                "swaps": len(swaps),
                "requests": len(records),
                "failed_requests": len(failed),
                "max_seconds_to_serve_new": round(max(delays), 4),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
