"""Traffic benchmark: does watching served images raise a shift before the labels do?

Streams are the demo's (scikit-learn's digits in groups ``A`` and ``B``, 256 images per
window), played by the main job's own loop (:func:`service.demo.job.run_demo`): each window's
images go to predict first (with ids and groups, as production would send them), and its
labels follow two windows later. The service's real code runs in this process on a fresh
SQLite store with the default settings (``ingest``, ``predict_images`` and
``process_pending``, the calls the Celery tasks make).

- **Shift run**: group ``B`` is rotated by 30 degrees from window ``--shift`` on.
  ``windows_earlier_than_labelled_drift``: windows of time between the traffic alarm (the
  first drifted traffic window holding images of a shifted window, raised when those images
  are predicted) and the labelled one (the first drifted labelled window from the shift on,
  raised when its labels arrive two windows later).
- **Clean run** (``--clean-windows``, no shift): ``traffic_false_incidents_per_100_windows``
  is the ``drift.traffic`` incidents opened per 100 tested traffic windows (both runs' windows
  before the shift count too).
- ``served_accuracy_error``: the largest difference, overall and per group, between the
  served accuracy the service reports and the one computed here from the answers predict
  gave and the labels sent (both runs).
- ``predict_p99_ms_with_capture`` and ``_without``: the 99th percentile of one
  ``predict_images`` call (``--call-size`` images, default 1) on the clean run's champion,
  with the default capture and with ``traffic_capture=0``, calls alternating in the same run.

    .venv/bin/python bench/traffic.py            # full run
    .venv/bin/python bench/traffic.py --quick    # smoke run

The last line of stdout is one JSON object; the lines before it are progress.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings
from service.context import Service
from service.demo.job import LABEL_DELAY, run_demo
from service.demo.stream import DemoPlan, demo_stream, digits, to_png_base64
from service.ingest.samples import ingest
from service.models.serving import predict_images
from service.pipeline.processor import process_pending
from service.store.schema import Alert, Sample, Traffic, TrafficWindow, Window
from service.traffic.served import served_accuracy
from service.traffic.writer import flush_traffic

STREAM = "bench"
NEVER = 10**6  # a window number no run reaches


class Recorder:
    """The in-process producer: sends through the service's calls and keeps what predict
    answered and which labels were accepted, to compute the served accuracy independently."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.answers: dict[str, tuple[str, str]] = {}  # id -> (class served, group)
        self.labels: dict[str, str] = {}  # id -> class sent, for accepted samples

    def send_samples(self, stream: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
        result = ingest(self.service.store, self.service.settings, stream, samples)
        accepted = set(result.to_dict()["accepted"])
        classes = self.service.settings.default_classes
        for s in samples:
            if s.get("id") in accepted:
                self.labels[s["id"]] = str(classes[s["label"]])
        if result.closed_windows:
            process_pending(self.service, stream)
        return result.to_dict()

    def send_images(
        self, stream: str, images: list[str], ids: list[str], groups: list[str]
    ) -> dict[str, Any]:
        closed: list[int] = []
        answer = predict_images(
            self.service,
            stream,
            images,
            ids=ids,
            groups=groups,
            on_traffic_closed=lambda _, numbers: closed.extend(numbers),
        )
        # The default background writer keeps the traffic; the learner (here, this thread,
        # as the queued learnstream.process_window would) tests the windows it closed.
        flush_traffic(self.service.store)
        if closed:
            process_pending(self.service, stream)
        for i, g, p in zip(ids, groups, answer["predictions"], strict=True):
            self.answers.setdefault(i, (p["label"], g))
        return answer

    def accuracy_error(self) -> float:
        """Largest |reported - recomputed| served accuracy, overall and per group."""
        tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for sample_id, (served, group) in self.answers.items():
            if sample_id in self.labels:
                for key in ("", group):
                    tallies[key][0] += int(served == self.labels[sample_id])
                    tallies[key][1] += 1
        with self.service.store.session() as session:
            stream_id = self.service.store.stream(session, STREAM).id
            reported = served_accuracy(session, stream_id)
        mine = {k: right / n for k, (right, n) in tallies.items()}
        theirs = {
            "": reported.overall.accuracy,
            **{g: t.accuracy for g, t in reported.by_group.items()},
        }
        print(f"  served accuracy: reported {theirs}, recomputed {mine}", file=sys.stderr)
        if set(mine) != set(theirs):
            return 1.0
        return max(abs(mine[k] - float(theirs[k] or 0.0)) for k in mine)


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("learnstream.alerts", "learnstream.incidents"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def play(home: Path, plan: DemoPlan) -> tuple[Service, Recorder, dict[str, Any]]:
    service = Service.from_settings(Settings(home=home, window_size=plan.window_size))
    recorder = Recorder(service)
    summary = run_demo(
        service,
        recorder.send_samples,
        recorder.send_images,
        plan,
        stream=STREAM,
        echo=lambda line: print("  " + line, file=sys.stderr),
        windows=demo_stream(plan),
    )
    return service, recorder, summary


def traffic_record(service: Service) -> tuple[int, list[int]]:
    """Tested traffic windows, and for each drift.traffic incident the window of time (the
    labelled window of its first traffic window's images) that opened it."""
    with service.store.session() as session:
        tested = session.scalar(
            select(func.count()).select_from(TrafficWindow).where(TrafficWindow.state == "tested")
        )
        firsts = [
            int(a.payload["incident"]["windows"][0])
            for a in session.scalars(select(Alert).where(Alert.kind == "drift.traffic"))
        ]
        opened = [
            int(
                session.scalar(
                    select(func.min(Window.seq))
                    .join(Sample, Sample.window_id == Window.id)
                    .join(Traffic, Traffic.traffic_id == Sample.sample_id)
                    .join(TrafficWindow, TrafficWindow.id == Traffic.window_id)
                    .where(TrafficWindow.seq == first)
                )
                or 0
            )
            for first in firsts
        ]
    return int(tested or 0), opened


def p99_ms(service: Service, calls: int, call_size: int, size: int) -> tuple[float, float]:
    """p99 of predict with capture (the defaults) and without, calls alternating."""
    images, _ = digits(size)
    off = Service.from_settings(service.settings.model_copy(update={"traffic_capture": 0.0}))
    timings: dict[bool, list[float]] = {True: [], False: []}
    encoded = [to_png_base64(images[i]) for i in range(len(images))]
    for call in range(2 * calls):
        capture = call % 2 == 0
        start = (call * call_size) % (len(encoded) - call_size)
        chosen = encoded[start : start + call_size]
        ids = [f"p99-{call}-{k}" for k in range(call_size)]
        svc = service if capture else off
        began = time.perf_counter()
        predict_images(svc, STREAM, chosen, ids=ids, groups=["A"] * call_size)
        timings[capture].append((time.perf_counter() - began) * 1000)
    return tuple(float(np.percentile(timings[c], 99)) for c in (True, False))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short streams")
    parser.add_argument("--shift", type=int, default=8, help="first shifted window")
    parser.add_argument("--shift-windows", type=int, default=14, help="windows of the shift run")
    parser.add_argument("--clean-windows", type=int, default=104, help="windows of the clean run")
    parser.add_argument("--calls", type=int, default=400, help="timed predict calls per setting")
    parser.add_argument("--call-size", type=int, default=1, help="images per timed call")
    args = parser.parse_args()
    if args.quick:
        args.shift_windows, args.clean_windows, args.calls = 11, 14, 100
    _quiet_logs()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"shift run: B rotated from window {args.shift}", file=sys.stderr)
        plan = DemoPlan(
            windows=args.shift_windows,
            shift_window=args.shift,
            corrupted_window=NEVER,
            bad_samples={},
        )
        service, recorder, summary = play(Path(tmp) / "shift", plan)
        labelled = [w for w in summary["drift_windows"] if w >= args.shift]
        traffic = [w for w in summary["traffic_drift_windows"] if w >= args.shift]
        # Labels of window w arrive LABEL_DELAY windows after its images were predicted.
        labelled_at = labelled[0] + LABEL_DELAY if labelled else None
        traffic_at = traffic[0] if traffic else None
        earlier = (
            labelled_at - traffic_at if labelled_at is not None and traffic_at is not None else None
        )
        print(
            f"  labelled drift windows {summary['drift_windows']} (first from the shift raised "
            f"at window {labelled_at}); traffic drift windows {summary['traffic_drift_windows']} "
            f"(raised at window {traffic_at}): {earlier} window(s) earlier",
            file=sys.stderr,
        )
        errors = [recorder.accuracy_error()]
        _, opened_shift = traffic_record(service)
        false_before_shift = [w for w in opened_shift if w < args.shift]

        print(f"clean run: {args.clean_windows} windows, no shift", file=sys.stderr)
        clean_plan = DemoPlan(
            windows=args.clean_windows,
            shift_window=NEVER,
            corrupted_window=NEVER,
            bad_samples={},
        )
        clean, clean_recorder, _ = play(Path(tmp) / "clean", clean_plan)
        errors.append(clean_recorder.accuracy_error())
        tested_clean, opened_clean = traffic_record(clean)
        # The shift run's traffic windows before the shift are no-shift windows too.
        shift_quiet = args.shift - 5  # traffic starts at window 5 (labels of 1-2 make v1)
        windows = tested_clean + max(shift_quiet, 0)
        incidents = len(opened_clean) + len(false_before_shift)
        per_100 = 100.0 * incidents / max(windows, 1)
        print(
            f"  clean traffic windows tested {tested_clean}, incidents opened {len(opened_clean)} "
            f"(from windows {opened_clean}); shift run before the "
            f"shift: {len(false_before_shift)} false in {shift_quiet}",
            file=sys.stderr,
        )
        with_capture, without = p99_ms(clean, args.calls, args.call_size, clean_plan.input_size)
        print(
            f"predict p99 ({args.call_size} image(s) per call): {with_capture:.2f} ms with "
            f"capture, {without:.2f} ms without (ratio {with_capture / without:.3f})",
            file=sys.stderr,
        )
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "traffic",
                "windows_earlier_than_labelled_drift": earlier,
                "traffic_false_incidents_per_100_windows": round(per_100, 3),
                "served_accuracy_error": round(max(errors), 6),
                "predict_p99_ms_with_capture": round(with_capture, 3),
                "predict_p99_ms_without": round(without, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
