"""State survives a restart of the learner process: the same weights as without the restart.

Each run ingests windows of digits and processes them with ``process_pending``, as the
learner does, on SQLite in its own home. The restarted learner processes windows 1 and 2 in
the test's process, and a new Python process (``NEW_PROCESS``), which knows nothing but what
the store and the registry hold, processes window 3; the uninterrupted learner processes all
three in the test's process, after the first run, in whatever state that left behind (global
random generators, caches), which must not matter either. Everything the update uses is
seeded (training by seed + window, the drift tests and the gate's holdout draw by seed), so
the versions must be bit-identical: the safetensors files of weights and strategy state are
compared by digest, and the manifests except their creation time. Three strategies with
different memories run: replay (a sample buffer), EWC (importances per experience) and DER
(a buffer with logits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import digit_samples

STRATEGIES = ("replay", "ewc", "der")
WINDOW = 48
SETTINGS = {
    "window_size": WINDOW,
    "bootstrap_samples": 20,
    "bootstrap_epochs": 3,
    "min_bootstrap_accuracy": 0.0,
    "update_policy": "every_window",
    "train_epochs": 2,
    "train_batch_size": 16,
    "drift_detector": "ks",  # no permutations: the quickest covariate test
    "min_drift_group_size": 5,
    "reference_size": 100,
    # A lenient gate: every candidate is promoted, so window 3 trains from version 2's state.
    "gate_tolerance": 1.0,
    "max_gap_increase": 1.0,
}


def learn(homes: dict[str, str], windows: list[int], samples: list[dict]) -> None:
    """Ingest and process ``windows`` (0-based) of ``samples`` for every strategy's home."""
    from service.config import Settings
    from service.context import Service
    from service.ingest.samples import ingest
    from service.pipeline.processor import process_pending

    for strategy, home in homes.items():
        service = Service.from_settings(Settings(home=home, strategy=strategy, **SETTINGS))
        for window in windows:
            ingest(
                service.store,
                service.settings,
                "r",
                samples[window * WINDOW : (window + 1) * WINDOW],
            )
            for outcome in process_pending(service, "r"):
                assert outcome.error is None, outcome.error
        service.close()


# A new learner process: it knows nothing but what the store and the registry hold.
NEW_PROCESS = """
import json, sys
sys.path[:0] = sys.argv[1:4]
from test_processor_restart import learn
spec = json.loads(open(sys.argv[4]).read())
learn(spec["homes"], spec["windows"], json.loads(open(spec["samples"]).read()))
"""


def _in_new_process(tmp_path: Path, homes: dict[str, str], windows: list[int]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"samples": str(tmp_path / "samples.json"), "homes": homes, "windows": windows})
    )
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSTREAM_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            NEW_PROCESS,
            str(here.parents[2]),
            str(here.parents[1]),
            str(here),
            str(spec),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _versions(home: Path) -> dict[int, dict]:
    """Per version on disk: its manifest (less the creation time) and file digests."""
    found = {}
    for folder in sorted((home / "models" / "r").iterdir()):
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest.pop("created_at")
        found[manifest["version"]] = manifest
    return found


def test_a_restart_between_windows_gives_the_same_weights(tmp_path: Path) -> None:
    samples = digit_samples(3 * WINDOW, seed=41)
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    restarted = {s: str(tmp_path / "restarted" / s) for s in STRATEGIES}
    straight = {s: str(tmp_path / "straight" / s) for s in STRATEGIES}
    learn(restarted, [0, 1], samples)  # this process learns windows 1 and 2 ...
    _in_new_process(tmp_path, restarted, [2])  # ... and a new one window 3
    learn(straight, [0, 1, 2], samples)  # this process learns all three without a stop
    for strategy in STRATEGIES:
        after_restart = _versions(Path(restarted[strategy]))
        without = _versions(Path(straight[strategy]))
        assert sorted(after_restart) == sorted(without) == [1, 2, 3], strategy
        third = after_restart[3]
        assert (third["parent"], third["state"]["experiences_seen"]) == (2, 3), strategy
        assert third["state"]["buffer_ids"] or strategy == "ewc", strategy
        for version, manifest in without.items():
            # The digests cover model.safetensors and state.safetensors byte for byte.
            assert after_restart[version] == manifest, (strategy, version)
