"""Outages under a live ingest worker: the Redis server restarts, the database goes away.

Each test runs a real ``learnstream worker`` subprocess and a producer sending calls, breaks
a real dependency in the middle, and checks that every sample sent is stored exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from helpers import digit_samples, worker_env
from sqlalchemy import create_engine, text

DB = 9
CALL = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "service.cli", "worker", "-Q", "ingest", "-c", "2"]
    return subprocess.Popen(
        [*command, "--loglevel", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


class Supervised:
    """A worker kept running as compose's ``restart: unless-stopped`` keeps it: restarted
    whenever it exits. Celery 5.7 with kombu's Redis transport exits with "Unrecoverable
    error" when the broker vanishes while it holds unacknowledged messages (closing the dead
    channel tries to restore them), so the restart is part of what the test checks."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.worker = _worker(env)
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            if self.worker.poll() is not None:
                self.restarts += 1
                self.worker = _worker(self.env)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        _stop(self.worker)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _send(producer: Celery, call: list[dict], timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Send one call as a producer would: a send that raised was not acknowledged, so resend."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return producer.send_task(
                "learnstream.ingest", kwargs={"stream": "d", "samples": call}, queue="ingest"
            )
        except Exception:  # kombu's OperationalError and friends while the broker is away
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _stored_ids(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT sample_id FROM samples")).scalars())
    except Exception:  # the table does not exist until the worker created the schema
        return []
    finally:
        engine.dispose()


# -- Redis restart ---------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a spare port, persisting every write (AOF, fsync
    always), as a production broker must for acknowledged messages to survive a restart."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)]
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persist,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self._answers, 20, "redis-server to answer")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown save, only what the AOF already holds
        self.process.wait(timeout=10)

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=10)


def _answers(producer: Celery, calls: list[list[dict]], sent: list, wait: float) -> list[dict]:  # type: ignore[type-arg]
    """Each call's answer, as a careful producer gets them: a call with no answer within
    ``wait`` seconds is sent again with the same ids (ingest is idempotent)."""
    answers: dict[int, dict] = {}
    for _ in range(4):
        for k, result in enumerate(sent):
            if k in answers:
                continue
            try:
                answers[k] = result.get(timeout=wait)
            except Exception:  # no answer (lost in the broker's crash) or the backend away
                sent[k] = _send(producer, calls[k])
        if len(answers) == len(calls):
            break
    assert len(answers) == len(calls), "every call is answered in the end"
    return [answers[k] for k in range(len(calls))]


def test_a_redis_restart_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis is killed (SIGKILL) and restarted mid-stream. Queued messages survive (AOF);
    a message a worker had just popped when Redis died can be lost by kombu's Redis
    transport, so the contract is the producer's: an answered call is committed, an
    unanswered one is sent again. Every sample ends up stored exactly once."""
    env = worker_env(
        tmp_path / "home",
        DB,
        BROKER_VISIBILITY_TIMEOUT="5",
        BROKER_RESTORE_INTERVAL="2",
        WINDOW_SIZE="100000",
    )
    env |= {
        "LEARNSTREAM_BROKER_URL": redis_server.url,
        "LEARNSTREAM_RESULT_BACKEND": redis_server.url,
    }
    store_url = f"sqlite:///{tmp_path / 'home' / 'learnstream.db'}"
    samples = digit_samples(30 * CALL, seed=21, prefix="r")
    calls = [samples[i : i + CALL] for i in range(0, len(samples), CALL)]
    producer = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    worker = Supervised(env)
    try:
        sent = []
        for k, call in enumerate(calls):
            sent.append(_send(producer, call))
            if k == 10:
                _wait_for(lambda: len(_stored_ids(store_url)) >= CALL, 120, "the first call")
                redis_server.kill()
                time.sleep(1.0)  # the worker and the producer see the broker gone
                redis_server.start()
        answers = _answers(producer, calls, sent, wait=20)
        time.sleep(6)  # past the visibility timeout: a redelivery would show up as a double
        stored = _stored_ids(store_url)
    finally:
        worker.stop()
    answered = {i for a in answers for i in a["accepted"] + a["duplicates"]}
    assert answered == {s["id"] for s in samples}
    assert sorted(stored) == sorted(s["id"] for s in samples)  # each exactly once


# -- database down, then up -------------------------------------------------------------------


class TcpProxy:
    """A TCP proxy in front of PostgreSQL that the test can take down (closing every
    connection and refusing new ones) and bring back on the same port: the database is
    unreachable for the worker while the shared server keeps serving the other tests."""

    def __init__(self, target_port: int) -> None:
        self.port = _free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_database_down_then_up_loses_and_doubles_nothing(tmp_path: Path, pg_url: str) -> None:
    from sqlalchemy.engine import make_url

    direct = make_url(pg_url)
    proxy = TcpProxy(direct.port or 5432)
    proxy.up()
    proxied = direct.set(port=proxy.port).render_as_string(hide_password=False)
    env = worker_env(tmp_path / "home", DB, DATABASE_URL=proxied, WINDOW_SIZE="100000")
    producer = Celery("producer", broker=env["LEARNSTREAM_BROKER_URL"])
    samples = digit_samples(20 * CALL, seed=22, prefix="p")
    calls = [samples[i : i + CALL] for i in range(0, len(samples), CALL)]
    worker = _worker(env)
    try:
        for call in calls[:8]:
            _send(producer, call)
        _wait_for(lambda: len(_stored_ids(pg_url)) == 8 * CALL, 120, "the first 8 calls")
        proxy.down()
        for call in calls[8:]:
            _send(producer, call)
        time.sleep(4)  # the worker's tasks fail to reach the store and retry with backoff
        assert len(_stored_ids(pg_url)) == 8 * CALL, "nothing can be stored while it is down"
        proxy.up()
        _wait_for(lambda: len(_stored_ids(pg_url)) >= len(samples), 150, "every sample")
        stored = _stored_ids(pg_url)
    finally:
        _stop(worker)
        proxy.down()
    assert sorted(stored) == sorted(s["id"] for s in samples)  # each exactly once
