"""Real images for tests: scikit-learn's digits, augmented; and encoders for every input format."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from service.config import Settings
from service.context import Service
from service.demo.job import GateMargins, gate_margins, run_demo, window_margins
from service.demo.stream import DemoPlan, augment, digits, to_png_base64

PG_ADMIN_URL = os.environ.get(
    "LEARNSTREAM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("LEARNSTREAM_TEST_REDIS", "redis://127.0.0.1:6379")

# The short demo of the dashboard and demo tests: version 1 at window 2, B rotated from
# window 3, B's labels permuted in window 7. Four windows of rotated B with true labels
# before the corrupted one make its candidate lose on B by a wide margin.
SHORT_DEMO = DemoPlan(windows=8, window_size=256, shift_window=3, corrupted_window=7)
DEMO_TOKEN = "dashboard-test-token"

# A stream's `served` and `traffic_drift` in `learnstream status` / `GET /v1/status` before
# any prediction was kept.
NO_TRAFFIC = {
    "traffic": 0,
    "traffic_windows": {"open": 0, "closed": 0, "tested": 0},
    "labelled": 0,
    "accuracy": None,
    "by_group": {},
    "by_version": {},
    "label_delay_s": {"count": 0, "p50": None, "p90": None, "max": None},
}
NO_TRAFFIC_DRIFT = {
    "traffic_windows": 0,
    "verdicts": {"drift": 0, "no_drift": 0, "untested": 0, "waiting": 0},
    "recent": [],
    "incident": None,
}


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides) -> Settings:
    """Small, fast settings for tests."""
    values = {
        "home": tmp_path / "home",
        "database_url": database_url,
        "window_size": 64,
        "bootstrap_samples": 40,
        "drift_permutations": 300,
        "reference_size": 300,
        "min_drift_group_size": 15,
        "min_group_size": 20,
        # Traffic written before predict answers: tests read it right after the call.
        "traffic_capture_mode": "inline",
        **overrides,
    }
    return Settings(**values)


@cache
def _digits(size: int) -> tuple[torch.Tensor, np.ndarray]:
    return digits(size)


def digit_samples(
    n: int,
    *,
    seed: int = 0,
    groups: tuple[str, ...] = ("A", "B"),
    rotate_group: str | None = None,
    rotation: float = 30.0,
    prefix: str = "s",
    size: int = 28,
) -> list[dict]:
    """``n`` ingest-contract samples drawn from the digits with fresh augmentation."""
    images, labels = _digits(size)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(labels), size=n, replace=n > len(labels))
    samples = []
    for k, base in enumerate(picks):
        group = groups[k % len(groups)]
        angle = rotation if group == rotate_group else 0.0
        samples.append(
            {
                "id": f"{prefix}-{seed}-{k}",
                "image": to_png_base64(augment(images[base], rng, angle)),
                "label": int(labels[base]),
                "group": group,
            }
        )
    return samples


def npy_base64(array: np.ndarray, allow_pickle: bool = False) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode()


def worker_env(home: Path, redis_db: int, **settings: str) -> dict[str, str]:
    """Environment of a learnstream subprocess on a fresh Redis database (flushed here).

    ``settings`` are ``LEARNSTREAM_`` variables without the prefix, e.g. ``WINDOW_SIZE="16"``;
    without ``DATABASE_URL`` the process uses SQLite in ``home``.
    """
    import redis

    url = f"{REDIS_URL}/{redis_db}"
    redis.Redis.from_url(url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSTREAM_")}
    env |= {
        "LEARNSTREAM_HOME": str(home),
        "LEARNSTREAM_BROKER_URL": url,
        "LEARNSTREAM_RESULT_BACKEND": url,
    }
    env |= {f"LEARNSTREAM_{name}": value for name, value in settings.items()}
    return env


class WebhookReceiver:
    """A real HTTP server on a free localhost port, served from a thread: it answers each POST
    with the next of ``statuses`` (the last one repeats), after ``delay`` seconds, and records
    the request (headers in lower case, raw body, and what ``inspect(headers, body)`` says)."""

    def __init__(self, statuses=(200,), delay: float = 0.0, inspect=None) -> None:  # type: ignore[no-untyped-def]
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = inspect(headers, body) if inspect else None
                with receiver._lock:
                    index = len(receiver.requests)
                    status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                    receiver.requests.append({"headers": headers, "body": body, "seen": seen})
                if delay:
                    import time

                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A localhost URL where nothing listens (a port just bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def play_demo(
    home: Path,
    plan: DemoPlan = SHORT_DEMO,
    echo: Callable[[str], None] = print,
    *,
    label_screen: bool = False,
) -> tuple[Service, dict[str, Any]]:
    """A demo run in this process through the calls the Celery tasks make; its summary
    (predictions are answered, but none is kept as traffic).

    The label screen is off unless asked: these demos test the gate on the corrupted window,
    whose labels the screen would otherwise hold back before they train."""
    from service.ingest.samples import ingest
    from service.models.serving import predict_images
    from service.pipeline.processor import process_pending

    settings = Settings(
        home=home,
        window_size=plan.window_size,
        operator_token=DEMO_TOKEN,
        label_screen=label_screen,
        # No traffic: these demos test the gate and the screen, and each traffic window's
        # covariate test costs seconds; the main job's traffic is tested by
        # test_learnstream_run and tests/service/traffic.
        traffic_capture=0.0,
    )
    service = Service.from_settings(settings)

    def send_samples(stream: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
        result = ingest(service.store, service.settings, stream, samples)  # learnstream.ingest
        if result.closed_windows:
            process_pending(service, stream)  # learnstream.process_window
        return result.to_dict()

    def send_images(
        stream: str, images: list[str], ids: list[str], groups: list[str]
    ) -> dict[str, Any]:
        return predict_images(service, stream, images, ids=ids, groups=groups)

    return service, run_demo(service, send_samples, send_images, plan, echo=echo)


def _windows(service: Service, stream: str) -> list[Any]:
    from service.store.schema import Window

    with service.store.session() as session:
        stream_id = service.store.stream(session, stream).id
        rows = session.scalars(
            select(Window).where(Window.stream_id == stream_id).order_by(Window.seq)
        )
        return [(stream_id, w.seq, w.summary or {}) for w in rows]


def demo_verdicts(service: Service, stream: str = "demo") -> dict[int, dict[str, Any]]:
    """What the service decided on each window: drift per kind (with the drifted groups),
    the candidate's fate, and the gate's alert (its kind, and whether it names group B).

    Other groups named are left out: in the short demo group A's own verdict on the
    corrupted candidate is close to its threshold (p 4 to 23 times below its Holm level, measured).
    """
    from service.queries.listings import list_alerts

    gate_alerts = {
        a["payload"]["window"]: (a["kind"], "B" in a["payload"]["groups"])
        for a in list_alerts(service)
        if a["kind"].startswith("fairness.") and "candidate" in a["payload"]
    }
    return {
        seq: {
            "drift": {
                kind: (drifted, summary.get("drifted_groups", {}).get(kind, []))
                for kind, drifted in sorted(summary.get("drift", {}).items())
            },
            "promoted": summary.get("promoted") is not None,
            "rejected": summary.get("rejected") is not None,
            "gate_alert": gate_alerts.get(seq),
        }
        for _, seq, summary in _windows(service, stream)
    }


def demo_margins(service: Service, stream: str = "demo") -> str:
    """One line per window with the margins of its drift tests and gate, for messages."""
    lines = [
        (seq, window_margins(service, stream_id, seq, summary))
        for stream_id, seq, summary in _windows(service, stream)
    ]
    return "\n".join(f"window {seq}: {margins}" for seq, margins in lines if margins)


def candidate_gate(service: Service, version: int, stream: str = "demo") -> GateMargins | None:
    """The margins of a candidate's stored gate report."""
    from service.queries.listings import list_models

    (model,) = [m for m in list_models(service, stream) if m["version"] == version]
    s = service.settings
    return gate_margins(
        model["gate_report"],
        tolerance=s.gate_tolerance,
        max_gap_increase=s.max_gap_increase,
        confidence=s.gate_confidence,
    )


# Quarantine tests: a stream whose classes have names, so that listings show names, not indices.
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def stream_of_windows(
    service: Service, stream: str, n: int, *, seed: int = 0
) -> dict[int, list[tuple[int, str, int, str]]]:
    """Ingest ``n`` digit samples into ``stream`` (windows of the service's window size, labels
    by the names of ``default_classes``); per window number, its samples' (row, id, label,
    group) in arrival order."""
    from service.ingest.samples import ingest
    from service.store.schema import Sample, Stream, Window

    classes = service.settings.default_classes
    samples = [
        {**s, "label": classes[s["label"]]} for s in digit_samples(n, seed=seed, prefix=stream)
    ]
    result = ingest(service.store, service.settings, stream, samples)
    assert not result.rejected, result.rejected
    with service.store.session() as session:
        rows = session.execute(
            select(Window.seq, Sample.id, Sample.sample_id, Sample.label, Sample.group)
            .join(Window, Window.id == Sample.window_id)
            .join(Stream, Stream.id == Sample.stream_id)
            .where(Stream.name == stream)
            .order_by(Sample.seq)
        ).all()
    windows: dict[int, list[tuple[int, str, int, str]]] = {}
    for seq, row, sample_id, label, group in rows:
        windows.setdefault(seq, []).append((row, sample_id, label, group))
    return windows


def hold_by_hand(
    service: Service,
    stream: str,
    window: int,
    samples: list[tuple[int, str, int, str]],
    reason: str = "held by hand",
) -> int:
    """Hold ``samples`` of window number ``window`` as the label screen would: each believed
    to be the next class, with scores 0.010, 0.020, ...; how many were newly held."""
    from service.quarantine.records import Flag, hold_samples
    from service.store.schema import Window

    flags = [
        Flag(row, label, (label + 1) % 10, 0.01 * (k + 1))
        for k, (row, _, label, _) in enumerate(samples)
    ]
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        window_id = session.scalar(
            select(Window.id).where(Window.stream_id == record.id, Window.seq == window)
        )
        return hold_samples(session, record.id, window_id, flags, reason)


def hold_window_by_hand(
    service: Service, stream: str, window: int, reason: str = "rejected"
) -> bool:
    """Hold window number ``window`` as a whole, as a rejection under label drift would."""
    from service.quarantine.records import hold_window
    from service.store.schema import Window

    with service.store.session() as session:
        record = service.store.stream(session, stream)
        window_id = session.scalar(
            select(Window.id).where(Window.stream_id == record.id, Window.seq == window)
        )
        return hold_window(session, record.id, window_id, reason)


def held_stream(service: Service, stream: str = "s") -> dict[int, list[tuple[int, str, int, str]]]:
    """Stream ``stream``: 16 digits (two windows of 8); the first two samples of window 1
    held, and window 2 as a whole; its samples per window (:func:`stream_of_windows`)."""
    windows = stream_of_windows(service, stream, 16)
    hold_by_hand(service, stream, 1, windows[1][:2])
    hold_window_by_hand(service, stream, 2, "candidate v2 rejected under label drift")
    return windows


def seeded_champion(service: Service, stream: str = "s", seed: int = 1) -> int:
    """Stream ``stream`` (created with the defaults) served by an untrained, seeded small CNN
    promoted as its champion: predictions without any training; the version's number."""
    from learners.models import build_model
    from learners.strategy_state import StrategyState
    from service.ingest.samples import get_or_create_stream

    record = get_or_create_stream(service.store, stream, service.settings).stream
    arch = {"n_classes": len(record.classes), "in_channels": record.channels}
    arch["input_size"] = record.size
    state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    version = service.registry.create_version(
        record,
        build_model(seed=seed, **arch),
        state,
        parent=None,
        strategy="naive",
        params={},
        windows=[],
        arch=arch,
    )
    service.registry.promote(record.id, version, by="test", reason="a seeded champion")
    return version
