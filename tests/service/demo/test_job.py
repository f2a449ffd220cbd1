"""`learnstream run`, the main job, end to end in a subprocess on the embedded default; the
short demo's verdicts, decided far from any threshold, and the same with one torch thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import SHORT_DEMO, candidate_gate, demo_margins, demo_verdicts, play_demo

from service.context import Service
from service.demo.job import gate_margins
from service.pipeline.gate import GateSettings, run_gate
from service.queries.listings import list_alerts, list_drift

WINDOWS = 12


def test_learnstream_run(tmp_path) -> None:
    env = {**os.environ, "LEARNSTREAM_HOME": str(tmp_path / "home")}
    env.pop("LEARNSTREAM_DATABASE_URL", None)
    env.pop("LEARNSTREAM_BROKER_URL", None)
    done = subprocess.run(
        # 12 of the default 20 windows (the suite's time): the shift (3), the corrupted
        # window (9) and the first adaptation's close all fall within them.
        [sys.executable, "-m", "service.cli", "run", "--windows", str(WINDOWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines))  # each window's line ends with its drift and gate margins
    summary = json.loads(lines[-1])
    assert set(summary) == {
        "windows",
        "samples_accepted",
        "samples_rejected",
        "shift_windows",
        "corrupted_windows",
        "drift_windows",
        "promoted_versions",
        "rejected_versions",
        "champion",
        "accuracy_by_group",
        "alerts",
        "adaptations",
        "quarantined",
        "traffic_drift_windows",
        "served_accuracy_by_group",
        "seconds",
    }
    assert summary["windows"] == WINDOWS
    assert summary["samples_accepted"] == WINDOWS * 256 and summary["samples_rejected"] == 3
    first_shift = summary["shift_windows"][0]
    assert min(summary["drift_windows"]) == first_shift  # nothing before, found at the shift
    assert summary["corrupted_windows"][0] in summary["drift_windows"]
    assert len(summary["promoted_versions"]) >= 2
    assert summary["champion"] in summary["promoted_versions"]
    # The label screen holds the corrupted window's permuted labels of B back before they
    # train (the gate's rejection of such a window is tested in the short demo, screen off).
    seq = summary["corrupted_windows"][0]
    corrupted = next(x for x in lines if x.startswith(f"window {seq:>3}"))
    assert "LABELS SUSPECT in B" in corrupted and "screen margin: p=" in corrupted, corrupted
    assert summary["quarantined"][str(seq)] >= 90, summary["quarantined"]  # of ~128 of B
    elsewhere = sum(n for w, n in summary["quarantined"].items() if w != str(seq))
    assert elsewhere <= 0.03 * 256 * (WINDOWS - 1)  # a false alarm holds a group's few flags
    assert summary["alerts"]["labels.suspect"] >= 1, "\n".join(lines)
    assert summary["alerts"]["ingest.rejected"] == 1
    assert set(summary["accuracy_by_group"]) == {"A", "B"}
    assert all(a > 0.6 for a in summary["accuracy_by_group"].values())
    assert any(line.startswith(f"window  {WINDOWS}") for line in lines)
    # Images go to predict two windows before their labels: the first served window's
    # rotated B is flagged in traffic (p about 1e-6 against 0.0017 on its predicted classes)
    # before the labels of the shift's first window are processed.
    served_first = 5  # labels of windows 1 and 2 (version 1) come with windows 3 and 4
    assert served_first in summary["traffic_drift_windows"], summary["traffic_drift_windows"]
    first_traffic = next(i for i, x in enumerate(lines) if x.startswith("traffic window   1 "))
    assert "DRIFT[B]" in lines[first_traffic], lines[first_traffic]
    assert first_traffic < next(i for i, x in enumerate(lines) if x.startswith("window   3"))
    assert summary["alerts"]["drift.traffic"] >= 1
    assert set(summary["served_accuracy_by_group"]) == {"A", "B"}
    assert all(a > 0.6 for a in summary["served_accuracy_by_group"].values())
    # The loop finishes: the shift opens an adaptation that closes with B back, and B ends
    # within 3 points of its pre-shift accuracy (by about 5 points more, here).
    first = summary["adaptations"][0]
    assert first["groups"] == ["B"] and first["opened"] == first_shift
    assert first["closed"] is not None and first["closed"] > first_shift
    b_before = first["baseline"]["B"]
    print("B before the shift", b_before, "at the end", summary["accuracy_by_group"]["B"])
    assert summary["accuracy_by_group"]["B"] >= b_before - 0.03

    status = subprocess.run(
        [sys.executable, "-m", "service.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    demo = json.loads(status.stdout)["streams"]["demo"]
    assert demo["champion"] == summary["champion"] and demo["windows"]["processed"] == WINDOWS
    alerts = subprocess.run(
        [sys.executable, "-m", "service.cli", "alerts", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    suspect = [a for a in json.loads(alerts.stdout) if a["kind"] == "labels.suspect"]
    assert (seq, "B") in [(a["payload"]["window"], a["payload"]["group"]) for a in suspect]


def test_gate_margins_rank_the_deciding_slices_as_holm_does() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1200)
    groups = np.array(["A", "B"] * 600)
    windows = np.repeat([1, 2, 3, 4], 300)  # big enough to decide: 7 / 300 < 0.04
    candidate = np.where(groups == "B", (y + 1) % 10, y)  # wrong on every B sample
    # Recent slices as long as the whole: only the groups and windows slice it.
    settings = GateSettings(recent_windows=4)
    report = run_gate(y, y, candidate, groups, windows, settings).to_dict()
    gate = gate_margins(report, tolerance=0.02, max_gap_increase=0.05, confidence=0.95)
    assert gate is not None
    bootstrap = {"bootstrap": True, "accuracy": 0.9, "n": 40}
    assert gate_margins(bootstrap, tolerance=0.02, max_gap_increase=0.05, confidence=0.95) is None
    by_subject = {m.subject: m for m in [*gate.groups, *gate.windows]}
    assert set(by_subject) == {"A", "B", "window 1", "window 2", "window 3", "window 4"}
    b = by_subject["B"]
    assert b.verdict == "fail" and b.difference == -1.0 and b.p_value < 1e-100
    assert sorted(m.holm for m in by_subject.values()) == pytest.approx(
        [0.05 / k for k in range(6, 0, -1)]
    )
    assert gate.worst_group is b and gate.gap_change == pytest.approx(1.0)
    assert str(gate).startswith("gate margin: worst group B -1.000 (tolerance 0.02), p=2.4e-181 vs")


def test_the_short_demo_decides_by_a_wide_margin(
    short_demo: tuple[Service, dict[str, Any]],
) -> None:
    """The shift is found in B with no permutation as extreme, the corrupted window's candidate
    fails on B orders of magnitude beyond its Holm level, the good update passes easily."""
    service, summary = short_demo
    margins = demo_margins(service)
    print(margins)
    plan = SHORT_DEMO
    verdicts = demo_verdicts(service)
    assert not any(
        drifted for w in range(1, plan.shift_window) for drifted, _ in verdicts[w]["drift"].values()
    ), margins
    shift = next(
        r for r in list_drift(service, "demo")
        if r["window"] == plan.shift_window and r["kind"] == "covariate"
    )  # fmt: skip
    b = shift["per_group"]["B"]
    assert b["is_drift"] and b["p_value"] < shift["threshold"] / 2, margins

    promoted = [v for v in summary["promoted_versions"] if v > 1]
    assert promoted, margins
    for version in promoted:
        gate = candidate_gate(service, version)
        assert gate is not None
        # Every deciding slice far from its Holm level: the gap rule, which fails only when
        # the worst group got worse beyond chance, is then as far from failing.
        assert all(m.p_value > 5 * m.holm for m in [*gate.groups, *gate.windows]), str(gate)

    (rejected,) = summary["rejected_versions"]
    gate = candidate_gate(service, rejected)
    assert gate is not None
    (worst,) = [m for m in gate.groups if m.subject == "B"]
    assert worst.verdict == "fail", margins
    assert worst.p_value < worst.holm / 100 and worst.difference < -5 * worst.tolerance, str(gate)
    fairness = [a for a in list_alerts(service) if a["kind"].startswith("fairness.")]
    print([(a["kind"], a["message"]) for a in fairness])
    # An adaptation's fairness.gap may name B too: the corrupted window makes it measurably
    # behind on its latest windows.
    assert all("B" in a["payload"]["groups"] for a in fairness), fairness
    (alert,) = [a for a in fairness if a["kind"] == "fairness.regression"]
    assert alert["kind"] == "fairness.regression" and "B" in alert["payload"]["groups"], margins
    assert alert["payload"]["window"] == plan.corrupted_window


def test_verdicts_do_not_depend_on_torch_threads(
    short_demo: tuple[Service, dict[str, Any]], tmp_path: Path
) -> None:
    """The short demo played again with one torch thread decides the same on every window.

    Training and the drift features round differently with another thread count (version 1
    itself differs); only margins far from every threshold keep the verdicts equal. Compared:
    every window's drift, the corrupted window's rejection and alert, and that the shift led
    to a promotion. Not compared: the fate of each quiet-window candidate of an open
    adaptation, a near-tie with the champion by design (neither better beyond the tolerance),
    whose promotion flips with rounding on another machine (measured: window 6, group A
    -0.030 at p=0.073 against Holm 0.05 with one thread).
    """
    service, _ = short_demo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, _ = play_demo(tmp_path / "home", echo=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    default, one = _decisive(demo_verdicts(service)), _decisive(demo_verdicts(single))
    print(f"{threads} threads:\n{demo_margins(service)}\n1 thread:\n{demo_margins(single)}")
    assert one == default, (
        f"{threads} threads:\n{demo_margins(service)}\n1 thread:\n{demo_margins(single)}"
    )


def _decisive(verdicts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The verdicts of the short demo that sit far from their thresholds."""
    plan = SHORT_DEMO
    corrupted = verdicts[plan.corrupted_window]
    return {
        "drift": {w: v["drift"] for w, v in verdicts.items()},
        "corrupted": (corrupted["rejected"], corrupted["gate_alert"]),
        "promoted_after_shift": any(
            v["promoted"]
            for w, v in verdicts.items()
            if plan.shift_window <= w < plan.corrupted_window
        ),
    }
