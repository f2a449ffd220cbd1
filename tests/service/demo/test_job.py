"""`learnstream run`, the main job, end to end in a subprocess on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_learnstream_run(tmp_path) -> None:
    env = {**os.environ, "LEARNSTREAM_HOME": str(tmp_path / "home")}
    env.pop("LEARNSTREAM_DATABASE_URL", None)
    env.pop("LEARNSTREAM_BROKER_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
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
        "seconds",
    }
    assert summary["windows"] == 12
    assert summary["samples_accepted"] == 12 * 256 and summary["samples_rejected"] == 3
    first_shift = summary["shift_windows"][0]
    assert min(summary["drift_windows"]) == first_shift  # nothing before, found at the shift
    assert summary["corrupted_windows"][0] in summary["drift_windows"]
    assert len(summary["promoted_versions"]) >= 2 and summary["rejected_versions"]
    assert summary["champion"] in summary["promoted_versions"]
    assert summary["alerts"]["fairness.regression"] == 1
    assert summary["alerts"]["ingest.rejected"] == 1
    assert set(summary["accuracy_by_group"]) == {"A", "B"}
    assert all(a > 0.6 for a in summary["accuracy_by_group"].values())
    assert any(line.startswith("window  12") for line in lines)

    status = subprocess.run(
        [sys.executable, "-m", "service.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    demo = json.loads(status.stdout)["streams"]["demo"]
    assert demo["champion"] == summary["champion"] and demo["windows"]["processed"] == 12
    alerts = subprocess.run(
        [sys.executable, "-m", "service.cli", "alerts", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    regression = [a for a in json.loads(alerts.stdout) if a["kind"] == "fairness.regression"]
    assert "B" in regression[0]["payload"]["groups"]
