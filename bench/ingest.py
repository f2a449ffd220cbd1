"""Ingest throughput against the real Redis and PostgreSQL, with a raw Celery baseline.

Starts 2 ingest worker processes (``learnstream worker -Q ingest -c 2``) and, in the
same run, a bare Celery worker with a no-op task and the same settings. A producer in
a separate process sends calls of 64 PNG images of 32x32 with a bounded number of
calls in flight, and times each call from send to result. The last line of standard
output is one JSON object (see the issue for its fields).

    .venv/bin/python bench/ingest.py [--calls 150] [--in-flight 8] [--image-store FOLDER]

``--image-store`` puts the images in a folder (``LEARNSTREAM_IMAGE_STORE``; default: in the
database's rows, as production's default).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 64
WORKERS = 2


def make_calls(n_calls: int, seed: int) -> list[list[dict]]:
    """Calls of 64 distinct PNG images of 32x32 (digits, resized, with noise)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torchvision.io import encode_png
    from torchvision.transforms import v2

    rng = np.random.default_rng(seed)
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = v2.functional.resize(images, [32, 32], antialias=True)
    calls = []
    for c in range(n_calls):
        samples = []
        for k in range(BATCH):
            i = int(rng.integers(len(images)))
            noisy = images[i] + torch.from_numpy(
                rng.normal(0, 0.05, (1, 32, 32)).astype(np.float32)
            )
            pixels = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
            samples.append(
                {
                    "image": base64.b64encode(encode_png(pixels).numpy().tobytes()).decode(),
                    "label": int(digits.target[i]),
                    "group": "A" if k % 2 else "B",
                    "id": f"{seed}-{c}-{k}",
                }
            )
        calls.append(samples)
    return calls


def produce(broker: str, task: str, queue: str, calls, in_flight: int, out) -> None:  # type: ignore[no-untyped-def]
    """Send every call with at most ``in_flight`` outstanding; report timings to ``out``."""
    from celery import Celery

    client = Celery("producer", broker=broker, backend=broker)
    client.conf.update(task_serializer="json", accept_content=["json"])
    pending: list[tuple[float, object]] = []
    latencies: list[float] = []
    accepted = 0
    started = time.perf_counter()

    def settle(block_until: int) -> None:
        nonlocal accepted
        while len(pending) > block_until:
            sent, result = pending.pop(0)
            answer = result.get(timeout=300, interval=0.005)  # type: ignore[attr-defined]
            latencies.append(time.perf_counter() - sent)
            accepted += len(answer["accepted"]) or answer.get("n", 0)

    for samples in calls:
        settle(in_flight - 1)
        result = client.send_task(task, kwargs={"stream": "bench", "samples": samples}, queue=queue)
        pending.append((time.perf_counter(), result))
    settle(0)
    out.put(
        {"seconds": time.perf_counter() - started, "latencies": latencies, "accepted": accepted}
    )


def run_producer(broker: str, task: str, queue: str, calls, in_flight: int) -> dict:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=produce, args=(broker, task, queue, calls, in_flight, out))
    process.start()
    result = out.get(timeout=1800)
    process.join()
    return result


def start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_ready(broker: str, names: str, timeout: float = 120.0) -> None:
    """Wait until a worker whose name contains ``names`` answers a ping."""
    from celery import Celery

    client = Celery("ping", broker=broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = client.control.ping(timeout=1.0) or []
        if any(names in next(iter(r)) for r in replies):
            return
    raise TimeoutError(f"worker {names} did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument(
        "--warm-calls", type=int, default=40, help="calls before timing, then ANALYZE"
    )
    parser.add_argument(
        "--image-store", default="database", help="database, or an absolute folder for images"
    )
    args = parser.parse_args()

    import psycopg
    import redis

    db_name = f"learnstream_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    broker = f"{REDIS}/13"
    redis.Redis.from_url(broker).flushdb()
    home = Path(f"/tmp/{db_name}")
    env = {
        **os.environ,
        "LEARNSTREAM_BROKER_URL": broker,
        "LEARNSTREAM_RESULT_BACKEND": broker,
        "LEARNSTREAM_DATABASE_URL": PG_ADMIN.replace(
            "postgresql://", "postgresql+psycopg://"
        ).rsplit("/", 1)[0]
        + f"/{db_name}",
        "LEARNSTREAM_HOME": str(home),
        "LEARNSTREAM_IMAGE_STORE": args.image_store,
        "BENCH_BROKER": broker,
        "PYTHONPATH": str(ROOT / "bench"),
    }
    print(f"making {args.calls} calls of {BATCH} PNG images of 32x32 ...", flush=True)
    calls = make_calls(args.calls, seed=1)
    warm = make_calls(args.warm_calls, seed=2)
    workers = [
        start(
            [
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                "-Q",
                "ingest",
                "-c",
                str(WORKERS),
                "--loglevel",
                "WARNING",
            ],
            env,
            ROOT,
        ),
        start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "raw_celery",
                "worker",
                "-Q",
                "raw",
                "-c",
                str(WORKERS),
                "-n",
                "raw@%h",
                "--loglevel",
                "WARNING",
            ],
            env,
            ROOT / "bench",
        ),
    ]
    try:
        wait_ready(broker, "celery@")
        wait_ready(broker, "raw@")
        run_producer(broker, "learnstream.ingest", "ingest", warm, args.in_flight)
        # A new table has no planner statistics until autovacuum's first ANALYZE (within a
        # minute in production): until then the duplicate check of each call is planned as a
        # scan of the whole stream (35-50 ms a call at 10,000 rows, against 1.5 ms with
        # statistics, measured). Time the steady state, as a running service sees it.
        with psycopg.connect(env["LEARNSTREAM_DATABASE_URL"].replace("+psycopg", "")) as conn:
            conn.execute("ANALYZE samples")
        run_producer(broker, "bench.noop", "raw", warm, args.in_flight)
        print("learnstream.ingest ...", flush=True)
        ours = run_producer(broker, "learnstream.ingest", "ingest", calls, args.in_flight)
        print("raw celery no-op ...", flush=True)
        raw = run_producer(broker, "bench.noop", "raw", calls, args.in_flight)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    images = args.calls * BATCH
    assert ours["accepted"] == images, f"only {ours['accepted']} of {images} accepted"
    ours_rate, raw_rate = images / ours["seconds"], images / raw["seconds"]
    print(f"learnstream: {ours_rate:.0f} images/s; raw celery: {raw_rate:.0f} images/s", flush=True)
    print(
        json.dumps(
            {
                "bench": "ingest",
                "images_per_s": round(ours_rate, 1),
                "raw_celery_images_per_s": round(raw_rate, 1),
                "ratio": round(ours_rate / raw_rate, 3),
                "p50_call_ms": round(percentile(ours["latencies"], 0.50) * 1000, 1),
                "p99_call_ms": round(percentile(ours["latencies"], 0.99) * 1000, 1),
                "workers": WORKERS,
                "batch": BATCH,
                "store": "postgresql",
            }
        )
    )


if __name__ == "__main__":
    main()
