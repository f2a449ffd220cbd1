"""The webhook alert sink: each alert POSTed as signed JSON, retried, every attempt recorded.

Where delivery runs, and why. Alerts are raised inside the transactions of ingest and of
the learner; a receiver that is slow, down or wrong must neither delay nor fail nor roll
back that work, and must never hear of an alert the store does not hold. So
:func:`service.alerts.records.after_commit` hands the ids of the alerts a transaction raised to
this sink only once it committed, and a daemon thread of the raising process delivers
them. A thread rather than a Celery task (``learnstream.notify``): every process that
raises alerts (ingest and learn workers, the API for rejected calls, the embedded
``learnstream run``) delivers without a new queue and worker to deploy, `service` stays
free of `workers`, and a dead receiver's retries occupy one otherwise idle thread, never a
worker's slot.

The store is the outbox, so nothing is lost when a process dies. A delivery is *claimed* by
inserting its ``alert_deliveries`` row (unique per alert and sink: exactly one process
wins), and the row is updated after every attempt. Each sink thread also sweeps, every
:data:`SCAN_INTERVAL` seconds (the first one interval after start, so short-lived CLI
commands never sweep), for alerts of the last :data:`CATCH_UP` seconds that no process
claimed within :data:`GRACE` seconds (their process died before delivering), and for
pending rows whose owner went silent; it claims and delivers those. A receiver may, rarely,
see an alert twice (its answer was lost and the attempt repeated, or a silent owner was
only slow): it should de-duplicate by alert id.

Wire format: ``POST webhook_url`` with ``Content-Type: application/json`` and the body
``{"source": "learnstream", "alert": {...}, "attempt": n, "sent_at": "<ISO 8601>"}``
(``alert`` as ``GET /v1/alerts`` shows it, plus ``stream``). Headers:
``X-Learnstream-Signature: sha256=<hex HMAC-SHA256 of the raw body with webhook_secret>``,
``X-Learnstream-Alert-Id`` and ``X-Learnstream-Timestamp`` (Unix seconds of ``sent_at``).
The signed ``sent_at`` lets a receiver refuse replays. A 2xx answer delivers; connection
errors, timeouts, 429 and 5xx are retried after ``webhook_backoff`` seconds, doubling up to
:data:`MAX_BACKOFF`, for ``webhook_max_attempts`` attempts in all; any other answer (4xx,
a redirect) fails at once, since repeating the request cannot change it.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, cast

import httpx
from sqlalchemy import exists, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.alerts.records import after_commit, alert_dict
from service.config import Settings
from service.errors import LearnstreamError
from service.store.engine import Store
from service.store.schema import Alert, AlertDelivery, Stream, utcnow

log = logging.getLogger(__name__)

SINK = "webhook"
SIGNATURE_HEADER = "X-Learnstream-Signature"
ALERT_ID_HEADER = "X-Learnstream-Alert-Id"
TIMESTAMP_HEADER = "X-Learnstream-Timestamp"
MAX_BACKOFF = 300.0  # seconds: the longest wait between two attempts
GRACE = 30.0  # seconds an alert's own process has to claim it before another one may
CATCH_UP = 3600.0  # seconds back that a sweep looks for alerts nobody claimed
SCAN_INTERVAL = 60.0  # seconds between sweeps
_STOP = object()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """What one POST gave: the HTTP status (``None`` when no answer came) or the error."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        code = self.status_code
        return not self.delivered and (code is None or code == 429 or code >= 500)


def _user_agent() -> str:
    try:
        return f"learnstream/{package_version('learnstream')}"
    except PackageNotFoundError:
        return "learnstream"


class WebhookSink:
    """Delivers alerts to ``settings.webhook_url`` from one daemon thread of this process.

    :meth:`submit` only queues ids (it runs in the committing thread); :meth:`deliver`
    claims and delivers one alert and may also be called directly; :meth:`sweep` claims
    what other processes left behind. ``grace``, ``catch_up`` and ``scan_interval`` are
    seconds (module defaults).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        grace: float = GRACE,
        catch_up: float = CATCH_UP,
        scan_interval: float = SCAN_INTERVAL,
    ) -> None:
        if not settings.webhook_url or settings.webhook_secret is None:
            raise ValueError("WebhookSink needs webhook_url and webhook_secret")
        self.store = store
        self.url = settings.webhook_url
        self.timeout = settings.webhook_timeout
        self.max_attempts = settings.webhook_max_attempts
        self.backoff = settings.webhook_backoff
        self.grace = grace
        self.catch_up = catch_up
        self.scan_interval = scan_interval
        self._secret = settings.webhook_secret.get_secret_value()
        self._user_agent = _user_agent()
        self._abandon = threading.Event()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    # -- thread ------------------------------------------------------------------------------

    @property
    def stale_after(self) -> float:
        """Seconds after which a pending delivery's owner counts as gone: all its attempts
        and waits would have ended by then."""
        waits = sum(min(self.backoff * 2**k, MAX_BACKOFF) for k in range(self.max_attempts - 1))
        return self.max_attempts * self.timeout + waits + 60.0

    def start(self) -> None:
        """Start (or, in a forked child, restart) the delivery thread."""
        with self._lock:
            if self._closed:
                return
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.Queue()  # a forked child does not inherit the parent's thread
            self._thread = threading.Thread(
                target=self._run, name="learnstream-webhook", daemon=True
            )
            self._thread.start()
        atexit.register(self.close)

    def submit(self, alert_ids: list[int]) -> None:
        """Queue committed alerts for delivery; returns at once."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self.start()
        for alert_id in alert_ids:
            self._queue.put(alert_id)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued, waiting at most ``timeout`` seconds (default: two request
        timeouts); what is left is found by another process's sweep."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
        atexit.unregister(self.close)
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(self.timeout * 2 if timeout is None else timeout)
        if thread.is_alive():
            self._abandon.set()
            log.warning("webhook: stopped with deliveries unfinished; another process resumes them")
            thread.join(self.timeout + 1)

    def _run(self) -> None:
        # The first sweep waits one interval: short-lived processes (CLI commands) never sweep.
        next_sweep = time.monotonic() + self.scan_interval
        while not self._abandon.is_set():
            try:
                item = self._queue.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if time.monotonic() >= next_sweep:
                self._safely(self.sweep)
                next_sweep = time.monotonic() + self.scan_interval
            if isinstance(item, int):
                self._safely(self.deliver, item)

    @staticmethod
    def _safely(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # the thread must outlive a broken store or a bug in one delivery
            log.exception("webhook: %s failed", getattr(fn, "__name__", fn))

    # -- delivery ----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Claim and deliver alerts nobody claimed within ``grace`` (of the last ``catch_up``
        seconds) and pending deliveries whose owner went silent; returns how many."""
        now = utcnow()
        with self.store.session() as session:
            unclaimed = list(
                session.scalars(
                    select(Alert.id)
                    .where(
                        Alert.created_at >= now - timedelta(seconds=self.catch_up),
                        Alert.created_at <= now - timedelta(seconds=self.grace),
                        ~exists().where(
                            AlertDelivery.alert_id == Alert.id, AlertDelivery.sink == SINK
                        ),
                    )
                    .order_by(Alert.id)
                    .limit(100)
                )
            )
            stale = list(
                session.scalars(
                    select(AlertDelivery.alert_id).where(
                        AlertDelivery.sink == SINK,
                        AlertDelivery.status == "pending",
                        AlertDelivery.updated_at < now - timedelta(seconds=self.stale_after),
                    )
                )
            )
        done = 0
        for alert_id in [*unclaimed, *stale]:
            done += self.deliver(alert_id) is not None
        if done:
            log.info("webhook: sweep delivered or settled %d left-over alert(s)", done)
        return done

    def deliver(self, alert_id: int) -> str | None:
        """Claim the alert's delivery and make the attempts; returns ``delivered`` or
        ``failed``, or ``None`` when the alert is gone or another process owns it."""
        alert = self._load(alert_id)
        if alert is None:
            return None
        claim = self._claim(alert_id)
        if claim is None:
            return None
        delivery_id, earlier = claim
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(1, self.max_attempts + 1):
                outcome = self._post(client, alert, earlier + attempt)
                final = outcome.delivered or not outcome.retryable or attempt == self.max_attempts
                status = "delivered" if outcome.delivered else "failed" if final else "pending"
                self._record(delivery_id, earlier + attempt, outcome, status)
                if final:
                    level = logging.INFO if outcome.delivered else logging.WARNING
                    log.log(
                        level,
                        "webhook: alert %d %s after %d attempt(s)%s",
                        alert_id,
                        status,
                        earlier + attempt,
                        f": {outcome.error}" if outcome.error else "",
                        extra={"alert_id": alert_id, "sink": SINK},
                    )
                    return status
                delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF)
                if self._abandon.wait(delay):
                    return None  # left pending: a sweep elsewhere resumes it
        return None  # unreachable: the last attempt is final

    def _load(self, alert_id: int) -> dict[str, Any] | None:
        with self.store.session() as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                return None
            stream = session.get(Stream, alert.stream_id) if alert.stream_id else None
            return {**alert_dict(alert), "stream": stream.name if stream else None}

    def _claim(self, alert_id: int) -> tuple[int, int] | None:
        """Insert the delivery row (exactly one process succeeds), or take over a pending one
        whose owner went silent: the row's id and its attempts so far, or ``None`` when
        another process owns it."""
        now = utcnow()
        try:
            with self.store.session() as session:
                row = AlertDelivery(
                    alert_id=alert_id, sink=SINK, status="pending", attempts=0, updated_at=now
                )
                session.add(row)
                session.flush()
                return row.id, 0
        except IntegrityError:
            pass
        with self.store.session() as session:
            found = session.execute(
                select(AlertDelivery.id, AlertDelivery.attempts).where(
                    AlertDelivery.alert_id == alert_id, AlertDelivery.sink == SINK
                )
            ).one_or_none()
            if found is None:
                return None  # the alert went away between loading and claiming
            delivery_id, attempts = found
            taken = session.execute(
                update(AlertDelivery)
                .where(
                    AlertDelivery.id == delivery_id,
                    AlertDelivery.status == "pending",
                    AlertDelivery.updated_at < now - timedelta(seconds=self.stale_after),
                )
                .values(updated_at=now)
            )
            return (delivery_id, attempts) if cast(CursorResult[Any], taken).rowcount == 1 else None

    def _post(self, client: httpx.Client, alert: dict[str, Any], attempt: int) -> Attempt:
        sent_at = utcnow()
        body = json.dumps(
            {"source": "learnstream", "alert": alert, "attempt": attempt, "sent_at": sent_at},
            default=lambda v: v.isoformat(),
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            SIGNATURE_HEADER: sign(self._secret, body),
            ALERT_ID_HEADER: str(alert["id"]),
            TIMESTAMP_HEADER: str(int(sent_at.timestamp())),
        }
        try:
            response = client.post(self.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Attempt(response.status_code, None)
        return Attempt(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")

    def _record(self, delivery_id: int, attempt: int, outcome: Attempt, status: str) -> None:
        now = utcnow()
        try:
            with self.store.session() as session:
                session.execute(
                    update(AlertDelivery)
                    .where(AlertDelivery.id == delivery_id)
                    .values(
                        status=status,
                        attempts=attempt,
                        last_status_code=outcome.status_code,
                        last_error=outcome.error,
                        updated_at=now,
                        delivered_at=now if outcome.delivered else None,
                    )
                )
        except (LearnstreamError, SQLAlchemyError) as exc:
            log.warning(
                "webhook: could not record attempt %d of delivery %d: %s", attempt, delivery_id, exc
            )


def install_webhook(settings: Settings, store: Store) -> WebhookSink | None:
    """The webhook sink of ``settings`` listening to ``store``'s commits, or ``None`` when
    ``webhook_url`` is unset."""
    if not settings.webhook_url:
        return None
    sink = WebhookSink(store, settings)
    after_commit(store, sink.submit)
    sink.start()
    url = httpx.URL(settings.webhook_url)
    log.info("webhook: alerts go to %s://%s", url.scheme, url.netloc.decode())
    return sink
