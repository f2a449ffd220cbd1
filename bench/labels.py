"""Label-quality benchmark: does the screen keep wrong labels out of what the service learns?

Each stream is scikit-learn's digits in three groups (``A``, ``B``, ``C``, drawn at random per
sample, every image with its own small affine change, as the demo does) of 256-sample windows,
fed through the service's real code (``ingest`` and ``process_pending``, the calls the Celery
tasks make) on a fresh SQLite store with the default settings. In windows 5, 6 and 7 a share
of group ``B``'s labels is wrong: ``random`` (another class at random) or ``swap`` (a fixed
pairing of classes: 0-6, 1-7, 2-5, 3-8, 4-9). Each noisy stream runs twice in the same run:
with the screen (the defaults) and without it (``label_screen=false``).

Figures per ``<rate>-<kind>``: ``precision`` and ``recall`` of the quarantine over the wrong
labels of the noisy windows (with the screen); ``poisoned_promotions``: promoted versions (with
the screen) whose training samples held more than 5 % wrong labels; ``final_group_acc_with``
and ``_without``: the final champion's accuracy on 600 fresh images of ``B`` with their true
labels. ``false_flag_rate_clean``: the share of samples quarantined on a stream with no wrong
label at all (cleanlab's raw flags, before the group test, are printed beside it).

    .venv/bin/python bench/labels.py            # full run
    .venv/bin/python bench/labels.py --quick    # smoke run: two noise levels, random only

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learners.evaluation import predict
from service.config import Settings
from service.context import Service
from service.demo.stream import augment, digits, to_png_base64
from service.ingest.samples import ingest
from service.pipeline.processor import process_pending
from service.quarantine.records import list_quarantine
from service.queries.listings import list_models, list_windows
from service.store.schema import Sample, Window

GROUPS = ("A", "B", "C")
NOISY_GROUP = "B"
WINDOW = 256
WINDOWS = 10
NOISY_WINDOWS = (5, 6, 7)
POISON = 0.05
SWAP = {0: 6, 6: 0, 1: 7, 7: 1, 2: 5, 5: 2, 3: 8, 8: 3, 4: 9, 9: 4}


@dataclass(frozen=True)
class Noise:
    rate: float
    kind: str  # "random" or "swap"

    @property
    def name(self) -> str:
        return f"{self.rate:g}-{self.kind}"


def window_samples(
    noise: Noise | None, window: int, images: torch.Tensor, labels: np.ndarray, order: np.ndarray
) -> tuple[list[dict[str, Any]], set[str]]:
    """A window's samples, and the ids of those whose label is wrong."""
    rng = np.random.default_rng([17, window])
    samples, wrong = [], set()
    for k in range(WINDOW):
        position = (window - 1) * WINDOW + k
        base = int(order[position % len(order)])
        group = GROUPS[int(rng.integers(len(GROUPS)))]
        label = int(labels[base])
        flip = rng.random()
        if noise and group == NOISY_GROUP and window in NOISY_WINDOWS and flip < noise.rate:
            other = int(rng.integers(1, 10))
            label = SWAP[label] if noise.kind == "swap" else (label + other) % 10
            wrong.add(f"s-{position:06d}")
        samples.append(
            {
                "id": f"s-{position:06d}",
                "image": to_png_base64(augment(images[base], rng)),
                "label": label,
                "group": group,
            }
        )
    return samples, wrong


def test_set(images: torch.Tensor, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """600 fresh images with their true labels (each with its own affine change)."""
    rng = np.random.default_rng(99)
    picks = rng.choice(len(labels), 600, replace=False)
    x = torch.stack([augment(images[i], rng) for i in picks])
    return (x * 255).round().to(torch.uint8), torch.from_numpy(labels[picks].astype(np.int64))


def _training_wrong_share(service: Service, windows: list[int], wrong: set[str]) -> float:
    """The share of wrong labels among the training samples (not quarantined) of ``windows``."""
    with service.store.session() as session:
        ids = session.scalars(
            select(Sample.sample_id)
            .join(Window, Window.id == Sample.window_id)
            .where(
                Window.seq.in_(windows),
                Sample.split == "train",
                Sample.quarantined.is_(False),
            )
        ).all()
    return sum(i in wrong for i in ids) / max(len(ids), 1)


def play(noise: Noise | None, screen: bool, home: Path) -> dict[str, Any]:
    """One stream through the service with the default settings (``screen``: the label screen)."""
    images, labels = digits(28)
    order = np.random.default_rng(3).permutation(len(labels))
    service = Service.from_settings(Settings(home=home, label_screen=screen))
    wrong: set[str] = set()
    try:
        for window in range(1, WINDOWS + 1):
            samples, bad = window_samples(noise, window, images, labels, order)
            wrong |= bad
            for start in range(0, len(samples), 64):
                ingest(service.store, service.settings, "bench", samples[start : start + 64])
            process_pending(service, "bench")
        held = {q["sample"] for q in list_quarantine(service.store, "bench") if q["sample"]}
        rows = list_windows(service, "bench")
        promoted = [
            m for m in list_models(service, "bench") if m["status"] in ("champion", "retired")
        ]
        poisoned = [
            m["version"]
            for m in promoted
            if _training_wrong_share(service, m["windows"], wrong) > POISON
        ]
        champion = max(
            (m for m in promoted if m["champion"]), key=lambda m: m["version"], default=None
        )
        accuracy = None
        if champion is not None:
            model = service.version("bench", champion["version"]).model
            x, y = test_set(images, labels)
            predictions, _ = predict(model, x)
            accuracy = float((predictions == y).float().mean())
    finally:
        service.close()
    screened = [
        (w["summary"] or {}).get("screen")
        for w in rows
        if (w.get("summary") or {}).get("screen") is not None
    ]
    return {
        "wrong": wrong,
        "held": held,
        "poisoned": poisoned,
        "accuracy": accuracy,
        "screened_samples": sum(sum(g["n"] for g in s["groups"].values()) for s in screened),
        "flagged": sum(s["flagged"] for s in screened),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two noise levels, random only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    rates, kinds = (
        ((0.2, 0.4), ("random",)) if args.quick else ((0.1, 0.2, 0.4), ("random", "swap"))
    )
    results: dict[str, dict[str, Any]] = {}
    for noise in [Noise(rate, kind) for kind in kinds for rate in rates]:
        runs = {}
        for screen in (True, False):
            with tempfile.TemporaryDirectory() as home:
                t0 = time.perf_counter()
                runs[screen] = play(noise, screen, Path(home))
                print(
                    f"{noise.name:<11} screen={screen!s:<5} poisoned={runs[screen]['poisoned']} "
                    f"B accuracy={runs[screen]['accuracy']} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        with_screen = runs[True]
        hits = len(with_screen["held"] & with_screen["wrong"])
        results[noise.name] = {
            "precision": round(hits / max(len(with_screen["held"]), 1), 4),
            "recall": round(hits / max(len(with_screen["wrong"]), 1), 4),
            "poisoned_promotions": len(with_screen["poisoned"]),
            "final_group_acc_with": round(with_screen["accuracy"] or 0.0, 4),
            "final_group_acc_without": round(runs[False]["accuracy"] or 0.0, 4),
        }
        print(f"{noise.name:<11} {json.dumps(results[noise.name])}", flush=True)
    with tempfile.TemporaryDirectory() as home:
        clean = play(None, True, Path(home))
    false_flag = len(clean["held"]) / max(clean["screened_samples"], 1)
    print(
        f"clean: {len(clean['held'])} of {clean['screened_samples']} screened samples "
        f"quarantined; cleanlab flagged {clean['flagged']} before the group test "
        f"({clean['flagged'] / max(clean['screened_samples'], 1):.3f}); "
        f"seconds {time.perf_counter() - started:.0f}",
        flush=True,
    )
    print(
        json.dumps(
            {"bench": "labels", "by_noise": results, "false_flag_rate_clean": round(false_flag, 4)}
        )
    )


if __name__ == "__main__":
    main()
