"""Adaptation benchmark: does the loop bring a shifted group back, and at what false-alarm cost?

Each stream is scikit-learn's digits in three groups (``A``, ``B``, ``C``, drawn at random per
sample, every image with its own small affine change, as the demo does) of 256-sample windows,
fed through the service's real code: ``ingest`` and ``process_pending``, the calls the Celery
tasks make, on a fresh SQLite store with the default settings. Only the update policy differs
between the four runs of each scenario:

- ``policy``: the service's defaults (the adaptive policy, ``update_policy=adaptive``);
- ``never``: no update after version 1 (``manual``);
- ``naive``: fine-tuning on every window (``every_window``, strategy ``naive``);
- ``on_drift_one_window``: the policy of main before issue 13 (``on_drift``, one window).

Scenarios (group ``C`` shifts): ``lasting_rotation`` (rotated 45 degrees from window 6 of 20);
``lasting_other`` (blurred and low-contrast from window 6 of 20); ``gradual`` (rotated by
3 degrees more each window from window 6, for 15 windows); ``no_shift`` (60 windows).

Accuracies are prequential (the serving champion on each window before it learns from it),
fractions. ``windows_to_recover``: windows from the first shifted one until the shifted group
is within 3 points of its own pre-shift accuracy (mean of the 3 windows before the shift),
null if never; ``final_gap``: that pre-shift accuracy minus its mean over the last 3 windows;
``worst_unshifted_drop``: the largest fall of another group below its own pre-shift accuracy;
``worst_drop_during``: the largest fall of the shifted group after the first 2 shifted
windows; ``false_incidents``: drift incidents opened before the shift (every one in
``no_shift``); ``promotions``: versions promoted after version 1. In ``no_shift`` the gaps are
of every group between its first and last 3 windows.

    .venv/bin/python bench/adapt.py            # full run
    .venv/bin/python bench/adapt.py --quick    # smoke run: shorter streams

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings
from service.context import Service
from service.demo.stream import augment, digits, to_png_base64
from service.ingest.samples import ingest
from service.pipeline.processor import process_pending
from service.queries.listings import list_alerts, list_windows

GROUPS = ("A", "B", "C")
SHIFTED = "C"
WINDOW = 256
RECOVERED = 0.03
POLICIES: dict[str, dict[str, Any]] = {
    "policy": {},  # the defaults: the adaptive policy
    "never": {"update_policy": "manual"},
    "naive": {"update_policy": "every_window", "strategy": "naive", "strategy_params": {}},
    "on_drift_one_window": {"update_policy": "on_drift", "train_windows": 1},
}

Transform = Callable[[torch.Tensor, np.random.Generator, int], torch.Tensor]


@dataclass(frozen=True)
class Scenario:
    """A stream: its length, the first shifted window, and the change of group C's images."""

    windows: int
    shift: int | None
    change: Transform


def _rotation(degrees: float) -> Transform:
    def change(image: torch.Tensor, rng: np.random.Generator, window: int) -> torch.Tensor:
        return augment(image, rng, degrees)

    return change


def _gradual(start: int, per_window: float) -> Transform:
    def change(image: torch.Tensor, rng: np.random.Generator, window: int) -> torch.Tensor:
        return augment(image, rng, per_window * (window - start + 1))

    return change


def _blur_contrast(image: torch.Tensor, rng: np.random.Generator, window: int) -> torch.Tensor:
    blurred = v2.functional.gaussian_blur(augment(image, rng), kernel_size=[5, 5], sigma=[1.2])
    return 0.25 + 0.4 * blurred


def scenarios(quick: bool) -> dict[str, Scenario]:
    length, shift, flat = (10, 5, 12) if quick else (20, 6, 60)
    return {
        "lasting_rotation": Scenario(length, shift, _rotation(45.0)),
        "lasting_other": Scenario(length, shift, _blur_contrast),
        "gradual": Scenario(length, shift, _gradual(shift, 3.0)),
        "no_shift": Scenario(flat, None, _rotation(0.0)),
    }


def window_samples(
    scenario: Scenario, window: int, images: torch.Tensor, labels: np.ndarray, order: np.ndarray
) -> list[dict[str, Any]]:
    rng = np.random.default_rng([11, window])
    samples = []
    for k in range(WINDOW):
        position = (window - 1) * WINDOW + k
        base = int(order[position % len(order)])
        group = GROUPS[int(rng.integers(len(GROUPS)))]
        shifted = scenario.shift is not None and group == SHIFTED and window >= scenario.shift
        image = (
            scenario.change(images[base], rng, window) if shifted else augment(images[base], rng)
        )
        samples.append(
            {
                "id": f"s-{position:06d}",
                "image": to_png_base64(image),
                "label": int(labels[base]),
                "group": group,
            }
        )
    return samples


def play(scenario: Scenario, overrides: dict[str, Any], home: Path) -> dict[str, Any]:
    """One stream through the service; per window the prequential accuracy per group."""
    images, labels = digits(28)
    order = np.random.default_rng(3).permutation(len(labels))
    service = Service.from_settings(Settings(home=home, **overrides))
    try:
        for window in range(1, scenario.windows + 1):
            samples = window_samples(scenario, window, images, labels, order)
            for start in range(0, len(samples), 64):
                ingest(service.store, service.settings, "bench", samples[start : start + 64])
            process_pending(service, "bench")
        rows = list_windows(service, "bench")
        alerts = list_alerts(service, "bench")
    finally:
        service.close()
    accuracy = {
        w["seq"]: (w["summary"] or {}).get("prequential_accuracy", {})
        for w in rows
        if (w.get("summary") or {}).get("prequential_accuracy")
    }
    incidents = [
        a["payload"]["incident"]["windows"][0]
        for a in alerts
        if a["kind"].startswith("drift.") and "incident" in a["payload"]
    ]
    promotions = sum(1 for w in rows if (w.get("summary") or {}).get("promoted")) - 1
    return {"accuracy": accuracy, "incidents": incidents, "promotions": max(promotions, 0)}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def figures(scenario: Scenario, run: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures for one run (fractions; null where undefined)."""
    acc: dict[int, dict[str, float]] = run["accuracy"]
    seen = sorted(acc)
    if scenario.shift is None:
        first, last = seen[:3], seen[-3:]
        drops = [
            (_mean([acc[w][g] for w in first]) or 0) - (_mean([acc[w][g] for w in last]) or 0)
            for g in GROUPS
        ]
        return {
            "windows_to_recover": None,
            "final_gap": round(max(drops), 4),
            "worst_unshifted_drop": round(max(drops), 4),
            "worst_drop_during": None,
            "false_incidents": len(run["incidents"]),
            "promotions": run["promotions"],
        }
    before = [w for w in seen if scenario.shift - 3 <= w < scenario.shift]
    after = [w for w in seen if w >= scenario.shift]
    pre = {g: _mean([acc[w][g] for w in before if g in acc[w]]) or 0.0 for g in GROUPS}
    recover = next(
        (w - scenario.shift for w in after if acc[w].get(SHIFTED, 0) >= pre[SHIFTED] - RECOVERED),
        None,
    )
    final = _mean([acc[w][SHIFTED] for w in after[-3:]]) or 0.0
    others = [pre[g] - acc[w][g] for w in after for g in GROUPS if g != SHIFTED and g in acc[w]]
    during = [pre[SHIFTED] - acc[w][SHIFTED] for w in after[2:]]
    return {
        "windows_to_recover": recover,
        "final_gap": round(pre[SHIFTED] - final, 4),
        "worst_unshifted_drop": round(max([0.0, *others]), 4),
        "worst_drop_during": round(max([0.0, *during]), 4),
        "false_incidents": sum(1 for w in run["incidents"] if w < scenario.shift),
        "promotions": run["promotions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter streams (smoke run)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    no_shift_windows = no_shift_incidents = 0
    for name, scenario in scenarios(args.quick).items():
        results[name] = {}
        for policy, overrides in POLICIES.items():
            with tempfile.TemporaryDirectory() as home:
                t0 = time.perf_counter()
                run = play(scenario, overrides, Path(home))
            results[name][policy] = figures(scenario, run)
            print(
                f"{name:<17} {policy:<20} {json.dumps(results[name][policy])} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            if name == "no_shift" and policy == "policy":
                no_shift_windows = len(run["accuracy"])
                no_shift_incidents = len(run["incidents"])
    rate = round(100.0 * no_shift_incidents / max(no_shift_windows, 1), 2)
    print(
        json.dumps(
            {
                "bench": "adapt",
                "scenarios": results,
                "false_incidents_per_100_no_shift_windows": rate,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
