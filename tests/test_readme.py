"""The README says what the code does: its settings table and its production section.

The production test runs the shell lines of the README's "Production" section as written,
except the first block (the values a team chooses), against the local Redis and PostgreSQL,
with a folder of real PNGs in label subfolders, and waits for the champion it promises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import torch
from helpers import PG_ADMIN_URL, REDIS_URL

from service.config import settings_table
from service.demo.stream import digits
from service.ingest.images import encode_png

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLASSES = ("zero", "one", "two")  # digits 0, 1 and 2 under names, as a team's folders
BROKER_DB, RESULTS_DB = 12, 13


def section(title: str) -> str:
    """The README's section headed ``## title``, up to the next section."""
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    """The ```bash blocks of ``text``, in order."""
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_readme_lists_every_setting_as_the_code_does() -> None:
    assert settings_table() in section("Settings"), "regenerate with: python -m service.config"


def _images(folder: Path) -> int:
    """PNGs of scikit-learn's digits 0-2 in one subfolder per class name; how many."""
    images, labels = digits(28)
    pixels = (images * 255).round().to(dtype=torch.uint8)
    n = 0
    for index, label in enumerate(labels.tolist()):
        if label < len(CLASSES):
            target = folder / CLASSES[label] / f"{index:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(pixels[index]))
            n += 1
    return n


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin(sql: str) -> None:
    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


@pytest.mark.postgres
@pytest.mark.redis
def test_the_production_section_runs_as_written(tmp_path: Path) -> None:
    values, *commands = shell_blocks(section("Production"))
    assert "DB=" in values and all("DB=" not in c.split("\n", 1)[0] for c in commands)
    db = f"ls_readme_{uuid.uuid4().hex[:8]}"
    n_images = _images(tmp_path / "images")
    port = _free_port()
    ours = (
        f"DB={db} BROKER={REDIS_URL}/{BROKER_DB} RESULTS={REDIS_URL}/{RESULTS_DB} "
        f"MODELS={tmp_path / 'models'} IMAGES={tmp_path / 'images'} "
        f"CLASSES={','.join(CLASSES)} PORT={port}\n"
    )
    for number in (BROKER_DB, RESULTS_DB):
        redis.Redis.from_url(f"{REDIS_URL}/{number}").flushdb()
    script = tmp_path / "production.sh"
    script.write_text("set -euo pipefail\n" + ours + "\n".join(commands))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSTREAM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["LEARNSTREAM_HOME"] = str(tmp_path / "home")  # nothing may fall back to ./.learnstream
    log = tmp_path / "production.log"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", str(script)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert shell.wait(timeout=400) == 0, log.read_text()[-4000:]
        stream = _wait_for_champion(env, db, timeout=240)
        assert stream.get("champion") is not None, f"{stream}\n{log.read_text()[-4000:]}"
        assert stream["samples"] == n_images and stream["rejected"] == 0, stream
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _admin(f'DROP ROLE IF EXISTS "{db}"')


def _wait_for_champion(env: dict[str, str], db: str, timeout: float) -> dict[str, Any]:
    """Poll ``learnstream status --json`` (the README's check) until stream pets has a
    champion; its status then (or the last seen, when the time is up)."""
    env = env | {
        "LEARNSTREAM_DATABASE_URL": f"postgresql+psycopg://{db}@127.0.0.1:5432/{db}",
        "LEARNSTREAM_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
    }
    deadline, stream = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "status", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode == 0:
            stream = json.loads(done.stdout)["streams"].get("pets", {})
            if stream.get("champion") is not None:
                return stream
        time.sleep(3)
    return stream
