"""Prometheus metrics for ``GET /metrics``, read from the store at scrape time.

Ingest, the learner and the API run in different processes (and machines), so no process
holds the counts in memory: :class:`StoreCollector` derives every family from the rows they
commit, and any API replica answers the same. Counters are counts of stored rows; they drop
only when a stream is deleted, which Prometheus reads as a counter reset. Durations are
summaries (``_count`` and ``_sum``) over the stored timings of every processed window and
drift report, so ``rate(x_sum) / rate(x_count)`` is the mean over any range.

Families (labels in braces):

- ``learnstream_samples_accepted_total{stream}``, ``learnstream_samples_rejected_total{stream,
  reason}`` (``reason``: the field at fault, ``image``, ``label``, ``group``, ``id``,
  ``meta``, ``sample``, ``call`` for a whole call that could not be read, else ``other``;
  ``stream="(unknown)"`` when the call named no stream, or none that exists: a label no
  stream name can take, so garbage names cannot add series);
- ``learnstream_windows{stream,state}``, ``learnstream_windows_processed_total{stream}``,
  ``learnstream_learner_lag_seconds{stream}`` (age of the oldest window waiting);
- ``learnstream_drift_verdicts_total{stream,kind,verdict}`` (``drift`` or ``no_drift``),
  ``learnstream_drift_p_value{stream,kind}``, ``learnstream_drift_group_p_value{stream,kind,
  group}`` and ``learnstream_drift_statistic{stream,kind}`` of each kind's latest test;
- ``learnstream_champion_version{stream}``, ``learnstream_champion_accuracy{stream}`` and
  ``learnstream_champion_group_accuracy{stream,group}``: the champion's prequential accuracy
  on the latest window it served;
- ``learnstream_adaptation_open{stream}`` and ``learnstream_adaptation_group_gap{stream,
  group}`` (baseline minus latest accuracy of each group an open adaptation waits for);
- ``learnstream_quarantined{stream,kind}``: samples (``sample``) and windows (``window``)
  held in quarantine;
- ``learnstream_gate_decisions_total{stream,decision}`` (``promoted`` or ``rejected``;
  version 1's bootstrap check included);
- summaries ``learnstream_update_duration_seconds{stream}``,
  ``learnstream_gate_duration_seconds{stream}``, ``learnstream_window_duration_seconds{stream}``
  and ``learnstream_drift_duration_seconds{stream,kind}``;
- ``learnstream_alerts_open{kind}``, ``learnstream_alert_deliveries_total{sink,status}``
  (``delivered``, ``failed``), ``learnstream_alert_deliveries_pending{sink}``,
  ``learnstream_alert_delivery_attempts_total{sink}``;
- ``learnstream_traffic_rows{stream}`` (predicted images kept as traffic),
  ``learnstream_served_accuracy{stream,group}`` and ``learnstream_served_labelled{stream,
  group}``: the accuracy of what was served, from late labels joined to the traffic, per
  group and overall (``group="(all)"``); the summary ``learnstream_label_delay_seconds
  {stream}`` (seconds from prediction to label, with its 0.5 and 0.9 quantiles);
- ``learnstream_traffic_windows{stream,verdict}`` (closed traffic windows by drift verdict:
  ``drift``, ``no_drift``, ``untested``, ``waiting``) and ``learnstream_traffic_drift_open
  {stream}`` (1 while a ``drift.traffic`` incident is open); ``learnstream_traffic_dropped
  _total`` (images this process did not keep: its capture queue was full);
- ``learnstream_store_up``: 1 when the store answered this scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, get_args

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from drift.result import DRIFT_KINDS
from service.alerts.records import AlertKind
from service.context import Service
from service.errors import LearnstreamError
from service.ingest.rejections import REJECTION_REASONS, reason_field
from service.pipeline.adaptation import Adaptation
from service.queries.listings import learner_lag
from service.store.schema import (
    Alert,
    AlertDelivery,
    Champion,
    DriftReport,
    Quarantine,
    Rejection,
    Stream,
    Window,
)
from service.traffic.report import latest_traffic_incident, traffic_verdict_counts
from service.traffic.served import served_accuracy
from service.traffic.writer import dropped_total

log = logging.getLogger(__name__)

ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)
WINDOW_STATES = ("open", "closed", "processing", "processed")
SINKS = ("webhook",)
UNKNOWN_STREAM = "(unknown)"  # stream label of rejections naming no existing stream
_REASON_PREFIX = 8  # characters of a reason that hold its field: "sample: " is the longest


class StoreCollector(Collector):
    """Gauges, counters and summaries read from the store at scrape time."""

    def __init__(self, service_of: Callable[[], Service]) -> None:
        self.service_of = service_of

    def collect(self) -> Iterator[Metric]:
        store = None
        try:
            store = self.service_of().store
            with store.session() as session:
                families = list(self._families(session))
            up = 1
        except (LearnstreamError, SQLAlchemyError) as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            families, up = [], 0
        yield from families
        store_up = GaugeMetricFamily(
            "learnstream_store_up", "1 when the store answered this scrape, else 0."
        )
        store_up.add_metric([], up)
        yield store_up
        dropped = CounterMetricFamily(
            "learnstream_traffic_dropped",
            "Predicted images this process did not keep as traffic: its capture queue was "
            "full (traffic_capture_queue).",
        )
        dropped.add_metric([], dropped_total(store) if store is not None else 0)
        yield dropped

    def _families(self, session: Session) -> Iterator[Metric]:
        streams = dict(session.execute(select(Stream.id, Stream.name)).all())
        names = sorted(streams.values())
        yield from _samples(session, streams, names)
        yield from _windows(session, streams, names)
        yield from _drift(session, streams, names)
        yield from _champions(session, streams, names)
        yield from _durations(session, streams)
        yield from _alerts(session)


def _samples(session: Session, streams: dict[int, str], names: list[str]) -> Iterator[Metric]:
    accepted = CounterMetricFamily(
        "learnstream_samples_accepted",
        "Samples accepted and stored, per stream.",
        labels=["stream"],
    )
    for name, n in sorted(session.execute(select(Stream.name, Stream.sample_count)).all()):
        accepted.add_metric([name], n)
    yield accepted

    # Grouped by the first characters of the reason, which hold the field at fault: the
    # store returns a few rows however many rejections there are.
    # Grouped by labels: PostgreSQL would not match two copies of a bound expression.
    whole_call = Rejection.index.is_(None).label("whole_call")
    prefix = func.substr(Rejection.reason, 1, _REASON_PREFIX).label("prefix")
    rows = session.execute(
        select(Rejection.stream_name, whole_call, prefix, func.count()).group_by(
            Rejection.stream_name, whole_call, prefix
        )
    ).all()
    # Calls naming no known stream share one label, so garbage names cannot add series.
    known = set(names)
    counts = {
        (name, reason): 0 for name in [*names, UNKNOWN_STREAM] for reason in REJECTION_REASONS
    }
    for name, whole_call, prefix, n in rows:
        label = name if name in known else UNKNOWN_STREAM
        key = (label, reason_field(prefix, bool(whole_call)))
        counts[key] += n
    rejected = CounterMetricFamily(
        "learnstream_samples_rejected",
        "Samples (or whole calls) rejected by ingest, per stream and field at fault; "
        f'stream="{UNKNOWN_STREAM}" when the call named no existing stream, reason="call" for '
        "a whole call.",
        labels=["stream", "reason"],
    )
    for (name, reason), n in sorted(counts.items()):
        rejected.add_metric([name, reason], n)
    yield rejected


def _windows(session: Session, streams: dict[int, str], names: list[str]) -> Iterator[Metric]:
    by_state = {(name, state): 0 for name in names for state in WINDOW_STATES}
    for stream_id, state, n in session.execute(
        select(Window.stream_id, Window.state, func.count()).group_by(
            Window.stream_id, Window.state
        )
    ):
        by_state[(streams[stream_id], state)] = n
    windows = GaugeMetricFamily(
        "learnstream_windows", "Windows per stream and state.", labels=["stream", "state"]
    )
    for (name, state), n in sorted(by_state.items()):
        windows.add_metric([name, state], n)
    yield windows

    processed = CounterMetricFamily(
        "learnstream_windows_processed", "Windows the learner processed.", labels=["stream"]
    )
    for name in names:
        processed.add_metric([name], by_state[(name, "processed")])
    yield processed

    oldest = dict.fromkeys(names, 0.0)
    for stream_id, seconds in learner_lag(session).items():
        oldest[streams[stream_id]] = seconds
    lag = GaugeMetricFamily(
        "learnstream_learner_lag_seconds",
        "Age of the oldest closed window the learner has not finished (0 when none waits).",
        labels=["stream"],
    )
    for name, seconds in sorted(oldest.items()):
        lag.add_metric([name], seconds)
    yield lag


def _drift(session: Session, streams: dict[int, str], names: list[str]) -> Iterator[Metric]:
    verdicts = {
        (name, kind, verdict): 0
        for name in names
        for kind in DRIFT_KINDS
        for verdict in ("drift", "no_drift")
    }
    for stream_id, kind, is_drift, n in session.execute(
        select(
            DriftReport.stream_id, DriftReport.kind, DriftReport.is_drift, func.count()
        ).group_by(DriftReport.stream_id, DriftReport.kind, DriftReport.is_drift)
    ):
        verdicts[(streams[stream_id], kind, "drift" if is_drift else "no_drift")] = n
    family = CounterMetricFamily(
        "learnstream_drift_verdicts",
        "Drift tests per stream, kind (covariate, label, concept) and verdict.",
        labels=["stream", "kind", "verdict"],
    )
    for labels, n in sorted(verdicts.items()):
        family.add_metric(list(labels), n)
    yield family

    latest_ids = (
        select(func.max(DriftReport.id))
        .group_by(DriftReport.stream_id, DriftReport.kind)
        .scalar_subquery()
    )
    latest = session.scalars(
        select(DriftReport)
        .where(DriftReport.id.in_(latest_ids))
        .order_by(DriftReport.stream_id, DriftReport.kind)
    ).all()
    p_value = GaugeMetricFamily(
        "learnstream_drift_p_value",
        "p-value of the latest drift test per stream and kind (tests that give one).",
        labels=["stream", "kind"],
    )
    group_p = GaugeMetricFamily(
        "learnstream_drift_group_p_value",
        "p-value of the latest drift test per stream, kind and group (groups large enough).",
        labels=["stream", "kind", "group"],
    )
    statistic = GaugeMetricFamily(
        "learnstream_drift_statistic",
        "Statistic of the latest drift test per stream and kind.",
        labels=["stream", "kind"],
    )
    for report in latest:
        name = streams[report.stream_id]
        statistic.add_metric([name, report.kind], report.statistic)
        if report.p_value is not None:
            p_value.add_metric([name, report.kind], report.p_value)
        for group, verdict in sorted(report.per_group.items()):
            if isinstance(verdict, dict) and verdict.get("p_value") is not None:
                group_p.add_metric([name, report.kind, group], verdict["p_value"])
    yield from (p_value, group_p, statistic)


def _latest_summaries(session: Session, champion_only: bool) -> list[tuple[int, dict[str, Any]]]:
    """The summary of each stream's latest processed window (that a champion served)."""
    query = select(Window.stream_id, func.max(Window.seq)).where(Window.state == "processed")
    if champion_only:
        query = query.where(Window.served_by.is_not(None))
    latest = session.execute(query.group_by(Window.stream_id)).all()
    rows = []
    for stream_id, seq in latest:
        summary = session.scalar(
            select(Window.summary).where(Window.stream_id == stream_id, Window.seq == seq)
        )
        rows.append((stream_id, summary or {}))
    return rows


def _champions(session: Session, streams: dict[int, str], names: list[str]) -> Iterator[Metric]:
    champion = GaugeMetricFamily(
        "learnstream_champion_version",
        "Version number of the serving champion, per stream (absent before the first).",
        labels=["stream"],
    )
    for stream_id, version in sorted(session.execute(select(Champion.stream_id, Champion.version))):
        champion.add_metric([streams[stream_id]], version)
    yield champion

    accuracy = GaugeMetricFamily(
        "learnstream_champion_accuracy",
        "The champion's prequential accuracy on the latest window it served, per stream.",
        labels=["stream"],
    )
    group_accuracy = GaugeMetricFamily(
        "learnstream_champion_group_accuracy",
        "The champion's prequential accuracy on the latest window it served, per group.",
        labels=["stream", "group"],
    )
    for stream_id, summary in sorted(_latest_summaries(session, champion_only=True)):
        by_group = dict(summary.get("prequential_accuracy") or {})
        overall = by_group.pop("overall", None)
        if overall is not None:
            accuracy.add_metric([streams[stream_id]], overall)
        for group, value in sorted(by_group.items()):
            group_accuracy.add_metric([streams[stream_id], group], value)
    yield from (accuracy, group_accuracy)
    yield from _adaptations(session, streams)
    yield from _quarantine(session, streams)
    yield from _served(session, streams)
    yield from _traffic_drift(session, streams)

    decisions = {(name, d): 0 for name in names for d in ("promoted", "rejected")}
    passed = Window.summary["gate_passed"].as_boolean()
    labelled = passed.label("gate_passed")
    for stream_id, gate_passed, n in session.execute(
        select(Window.stream_id, labelled, func.count())
        .where(Window.state == "processed", passed.is_not(None))
        .group_by(Window.stream_id, labelled)
    ):
        decisions[(streams[stream_id], "promoted" if gate_passed else "rejected")] += n
    gate = CounterMetricFamily(
        "learnstream_gate_decisions",
        "Candidates the gate promoted or rejected, per stream (version 1's bootstrap included).",
        labels=["stream", "decision"],
    )
    for labels, n in sorted(decisions.items()):
        gate.add_metric(list(labels), n)
    yield gate


def _adaptations(session: Session, streams: dict[int, str]) -> Iterator[Metric]:
    opened = GaugeMetricFamily(
        "learnstream_adaptation_open",
        "1 while an adaptation (the adaptive update policy) is open, per stream.",
        labels=["stream"],
    )
    gap = GaugeMetricFamily(
        "learnstream_adaptation_group_gap",
        "An open adaptation's group: its baseline accuracy minus its latest, per group.",
        labels=["stream", "group"],
    )
    for stream_id, summary in sorted(_latest_summaries(session, champion_only=False)):
        adaptation = Adaptation.from_dict(summary.get("adaptation"))
        if adaptation is None or not adaptation.is_open:
            opened.add_metric([streams[stream_id]], 0.0)
            continue
        opened.add_metric([streams[stream_id]], 1.0)
        for group in adaptation.groups:
            latest = adaptation.final.get(group)
            if latest is not None:
                gap.add_metric([streams[stream_id], group], adaptation.baseline[group] - latest)
    yield from (opened, gap)


ALL_GROUPS = "(all)"  # group label of a stream's overall served accuracy


def _served(session: Session, streams: dict[int, str]) -> Iterator[Metric]:
    rows = GaugeMetricFamily(
        "learnstream_traffic_rows",
        "Predicted images kept as traffic, per stream.",
        labels=["stream"],
    )
    accuracy = GaugeMetricFamily(
        "learnstream_served_accuracy",
        "Accuracy of the predictions served, from late labels joined to the traffic, per "
        'stream and group (group="(all)": overall).',
        labels=["stream", "group"],
    )
    labelled = GaugeMetricFamily(
        "learnstream_served_labelled",
        "Predictions served that a late label joined, per stream and group.",
        labels=["stream", "group"],
    )
    delay = Metric(
        "learnstream_label_delay_seconds",
        "Seconds from a prediction to its late label, per stream.",
        "summary",
    )
    for stream_id, name in sorted(streams.items(), key=lambda item: item[1]):
        served = served_accuracy(session, stream_id)
        rows.add_metric([name], served.traffic)
        tallies = {ALL_GROUPS: served.overall, **served.by_group}
        for group, tally in tallies.items():
            labelled.add_metric([name, group], tally.n)
            if tally.accuracy is not None:
                accuracy.add_metric([name, group], tally.accuracy)
        d = served.label_delay
        for quantile, value in (("0.5", d.p50), ("0.9", d.p90)):
            if value is not None:
                delay.add_sample(
                    "learnstream_label_delay_seconds", {"stream": name, "quantile": quantile}, value
                )
        delay.add_sample("learnstream_label_delay_seconds_count", {"stream": name}, d.count)
        delay.add_sample("learnstream_label_delay_seconds_sum", {"stream": name}, d.total)
    yield from (rows, accuracy, labelled, delay)


def _traffic_drift(session: Session, streams: dict[int, str]) -> Iterator[Metric]:
    windows = GaugeMetricFamily(
        "learnstream_traffic_windows",
        "Closed traffic windows per stream and drift verdict (drift, no_drift, untested, waiting).",
        labels=["stream", "verdict"],
    )
    drifting = GaugeMetricFamily(
        "learnstream_traffic_drift_open",
        "1 while a drift.traffic incident is open on the stream (served images drifted).",
        labels=["stream"],
    )
    for stream_id, name in sorted(streams.items(), key=lambda item: item[1]):
        for verdict, n in traffic_verdict_counts(session, stream_id).items():
            windows.add_metric([name, verdict], n)
        incident = latest_traffic_incident(session, stream_id) or {}
        drifting.add_metric([name], int(bool(incident.get("open"))))
    yield from (windows, drifting)


def _quarantine(session: Session, streams: dict[int, str]) -> Iterator[Metric]:
    held = GaugeMetricFamily(
        "learnstream_quarantined",
        "Samples (likely wrong labels) and windows held in quarantine, per stream.",
        labels=["stream", "kind"],
    )
    counts = {
        (stream_id, kind): n
        for stream_id, kind, n in session.execute(
            select(Quarantine.stream_id, Quarantine.kind, func.count())
            .where(Quarantine.status == "held")
            .group_by(Quarantine.stream_id, Quarantine.kind)
        )
    }
    for stream_id, name in sorted(streams.items(), key=lambda item: item[1]):
        for kind in ("sample", "window"):
            held.add_metric([name, kind], counts.get((stream_id, kind), 0))
    yield held


def _durations(session: Session, streams: dict[int, str]) -> Iterator[Metric]:
    for stage, help_text in (
        ("update", "Training one candidate (or version 1)"),
        ("gate", "Gating one candidate against the champion"),
        ("total", "Processing one window, all steps"),
    ):
        seconds = Window.summary[("seconds", stage)].as_float()
        name = "window" if stage == "total" else stage
        family = SummaryMetricFamily(
            f"learnstream_{name}_duration_seconds",
            f"{help_text}, in seconds, per stream.",
            labels=["stream"],
        )
        for stream_id, n, total in sorted(
            session.execute(
                select(Window.stream_id, func.count(), func.sum(seconds))
                .where(Window.state == "processed", seconds.is_not(None))
                .group_by(Window.stream_id)
            )
        ):
            family.add_metric([streams[stream_id]], count_value=n, sum_value=float(total))
        yield family

    drift = SummaryMetricFamily(
        "learnstream_drift_duration_seconds",
        "One drift test on one window, in seconds, per stream and kind.",
        labels=["stream", "kind"],
    )
    for stream_id, kind, n, total in sorted(
        session.execute(
            select(
                DriftReport.stream_id, DriftReport.kind, func.count(), func.sum(DriftReport.seconds)
            ).group_by(DriftReport.stream_id, DriftReport.kind)
        )
    ):
        drift.add_metric([streams[stream_id], kind], count_value=n, sum_value=float(total))
    yield drift


def _alerts(session: Session) -> Iterator[Metric]:
    open_by_kind = dict(
        session.execute(
            select(Alert.kind, func.count())
            .where(Alert.acknowledged.is_(False))
            .group_by(Alert.kind)
        ).all()
    )
    open_alerts = GaugeMetricFamily(
        "learnstream_alerts_open", "Unacknowledged alerts, per kind.", labels=["kind"]
    )
    for kind in sorted({*ALERT_KINDS, *open_by_kind}):
        open_alerts.add_metric([kind], open_by_kind.get(kind, 0))
    yield open_alerts

    by_status = {(sink, s): 0 for sink in SINKS for s in ("delivered", "failed", "pending")}
    attempts = dict.fromkeys(SINKS, 0)
    for sink, status, n, tried in session.execute(
        select(
            AlertDelivery.sink, AlertDelivery.status, func.count(), func.sum(AlertDelivery.attempts)
        ).group_by(AlertDelivery.sink, AlertDelivery.status)
    ):
        by_status[(sink, status)] = n
        attempts[sink] = attempts.get(sink, 0) + int(tried or 0)
    done = CounterMetricFamily(
        "learnstream_alert_deliveries",
        "Alerts delivered to a sink, or given up on (failed), per sink.",
        labels=["sink", "status"],
    )
    pending = GaugeMetricFamily(
        "learnstream_alert_deliveries_pending",
        "Alerts being delivered (between attempts), per sink.",
        labels=["sink"],
    )
    for (sink, status), n in sorted(by_status.items()):
        if status == "pending":
            pending.add_metric([sink], n)
        else:
            done.add_metric([sink, status], n)
    tries = CounterMetricFamily(
        "learnstream_alert_delivery_attempts",
        "Delivery attempts made (requests sent), per sink.",
        labels=["sink"],
    )
    for sink, n in sorted(attempts.items()):
        tries.add_metric([sink], n)
    yield from (done, pending, tries)


def metrics_registry(service_of: Callable[[], Service]) -> CollectorRegistry:
    """A registry of this app's own (never the global one, so several apps can coexist)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(service_of))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
