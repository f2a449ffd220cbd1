"""`learnstream worker` as a real process, fed by `learnstream submit` as a producer would."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

from helpers import digit_samples, worker_env

DB = 12


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_submit_a_folder_to_a_worker_process(tmp_path: Path) -> None:
    env = worker_env(tmp_path / "home", DB, WINDOW_SIZE="16", BOOTSTRAP_SAMPLES="1000")
    folder = tmp_path / "images"
    for sample in digit_samples(20, seed=5):
        label_dir = folder / str(sample["label"])
        label_dir.mkdir(parents=True, exist_ok=True)
        (label_dir / f"{sample['id']}.png").write_bytes(base64.b64decode(sample["image"]))
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "-c", "1", "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = _cli(
            "submit", str(folder), "--stream", "folders", "--group", "cam1", "--json", env=env
        )
        assert done.returncode == 1, done.stderr[-2000:]  # one image was refused
        totals = json.loads(done.stdout)
        assert totals["accepted"] == 20 and totals["duplicates"] == 0
        assert totals["rejected"] == [
            {"file": "3/broken.png", "reason": "image: PNG header is truncated or damaged"}
        ]
        (folder / "3" / "broken.png").unlink()
        again = _cli("submit", str(folder), "--stream", "folders", "--group", "cam1", env=env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "sent 20, accepted 0, duplicates 20, rejected 0" in again.stdout
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(_cli("status", "--json", env=env).stdout)["streams"]["folders"]
            if status["windows"]["processed"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert status["samples"] == 20 and status["rejected"] == 1
        assert status["windows"] == {"open": 1, "closed": 0, "processed": 1}
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_a_worker_process_with_an_unreachable_database_exits_with_one_line(tmp_path: Path) -> None:
    from service.config import MASK
    from workers.app import STORE_DOWN

    url = "postgresql://nobody:pw@127.0.0.1:1/x"
    env = worker_env(tmp_path / "home", DB, DATABASE_URL=url)
    done = _cli("worker", "-c", "1", env=env, timeout=60)
    assert done.returncode == 1
    masked = f"postgresql+psycopg://nobody:{MASK}@127.0.0.1:1/x"
    assert done.stderr.startswith("error: " + STORE_DOWN.format(url=masked, reason=""))
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
