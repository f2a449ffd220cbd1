"""The main job: play the demo stream through the queue and summarise what the service decided.

The producer side is given as two callables (send samples, send images to
predict), so the same job runs over the embedded in-process broker or a real
Redis broker; the service's decisions are read back from the store.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from learners.evaluation import evaluate_by_group, predict
from learners.models import to_float
from service.context import Service
from service.demo.stream import DemoPlan, demo_stream
from service.store.batches import load_batch
from service.store.schema import (
    Alert,
    DriftReport,
    ModelVersion,
    Sample,
    Traffic,
    TrafficWindow,
    Window,
)
from service.traffic.served import served_accuracy

SendSamples = Callable[[str, list[dict[str, Any]]], dict[str, Any]]
# stream, images, ids, groups -> the predict contract's answer
SendImages = Callable[[str, list[str], list[str], list[str]], dict[str, Any]]
CALL_SIZE = 64
LABEL_DELAY = 2  # windows between a window's predictions and its labels


def _wait_processed(service: Service, stream_id: int, seq: int, timeout: float) -> Window:
    deadline = time.monotonic() + timeout
    while True:
        with service.store.session() as session:
            window = session.scalar(
                select(Window).where(Window.stream_id == stream_id, Window.seq == seq)
            )
            if window is not None and window.state == "processed":
                return window
        if time.monotonic() > deadline:
            raise TimeoutError(f"window {seq} was not processed within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True)
class SliceMargin:
    """How far one deciding slice of a gate (a group or a window) is from the edge.

    The gate fails a slice whose p-value is within its Holm level (Holm's step-down) and
    whose accuracy fell by more than the tolerance; the further both are from their
    limits, the less its ``verdict`` can depend on rounding.
    """

    subject: str
    verdict: str
    difference: float
    tolerance: float
    p_value: float
    holm: float

    def __str__(self) -> str:
        return (
            f"{self.subject} {self.difference:+.3f} (tolerance {self.tolerance}), "
            f"p={self.p_value:.2g} vs Holm {self.holm:.2g}"
        )


@dataclass(frozen=True)
class GateMargins:
    """The margins of one gate decision: every deciding slice, and the group gap's change."""

    groups: list[SliceMargin]
    windows: list[SliceMargin]
    gap_change: float
    max_gap_increase: float

    @property
    def worst_group(self) -> SliceMargin | None:
        return min(self.groups, key=lambda m: m.difference, default=None)

    def __str__(self) -> str:
        worst = self.worst_group
        parts = [f"worst group {worst}"] if worst is not None else []
        parts.append(f"gap {self.gap_change:+.3f} (max +{self.max_gap_increase})")
        return "gate margin: " + "; ".join(parts)


def gate_margins(
    report: dict[str, Any], *, tolerance: float, max_gap_increase: float, confidence: float
) -> GateMargins | None:
    """The margins of a stored gate report, or ``None`` for a report without a gate (bootstrap).

    The Holm level of each deciding slice is ``(1 - confidence) / (m - rank)``, ranked by
    ascending p-value over the ``m`` slices that decide, as the gate ranks them.
    """
    if "groups" not in report:
        return None
    slices = [*report["groups"], *report.get("recent", []), *report["windows"]]
    deciding = [c for c in slices if c["verdict"] != "not decisive"]
    ranked = sorted(deciding, key=lambda c: c["p_value"])
    alpha = 1.0 - confidence
    holm = {id(c): alpha / (len(ranked) - rank) for rank, c in enumerate(ranked)}

    def margins(comparisons: list[dict[str, Any]]) -> list[SliceMargin]:
        return [
            SliceMargin(
                c["subject"], c["verdict"], c["difference"], tolerance, c["p_value"], holm[id(c)]
            )
            for c in comparisons
            if id(c) in holm
        ]

    return GateMargins(
        groups=margins([*report["groups"], *report.get("recent", [])]),
        windows=margins(report["windows"]),
        gap_change=report["candidate_gap"] - report["champion_gap"],
        max_gap_increase=max_gap_increase,
    )


def drift_margins(reports: list[DriftReport]) -> str:
    """Each test's smallest p-value (overall or a group's) against its threshold."""
    parts = []
    for r in reports:
        tested = [(r.p_value, "all")] + [(v["p_value"], g) for g, v in r.per_group.items()]
        known = [(p, g) for p, g in tested if p is not None]  # ADWIN and others give none
        if known:
            p, group = min(known)
            parts.append(f"{r.kind} p={p:.2g}[{group}] vs {r.threshold:.2g}")
    return "drift margin: " + ", ".join(parts) if parts else ""


def window_margins(service: Service, stream_id: int, seq: int, summary: dict[str, Any]) -> str:
    """The drift and gate margins of a processed window, for its progress line."""
    s = service.settings
    with service.store.session() as session:
        reports = list(
            session.scalars(
                select(DriftReport)
                .join(Window, Window.id == DriftReport.window_id)
                .where(Window.stream_id == stream_id, Window.seq == seq)
                .order_by(DriftReport.id)
            )
        )
        report = None
        if summary.get("candidate") is not None:
            report = session.scalar(
                select(ModelVersion.gate_report).where(
                    ModelVersion.stream_id == stream_id,
                    ModelVersion.version == summary["candidate"],
                )
            )
    parts = [drift_margins(reports), screen_margin(summary.get("screen"))]
    if report:
        gate = gate_margins(
            report,
            tolerance=s.gate_tolerance,
            max_gap_increase=s.max_gap_increase,
            confidence=s.gate_confidence,
        )
        parts.append(str(gate) if gate is not None else "")
    return " | ".join(p for p in parts if p)


def screen_margin(screen: dict[str, Any] | None) -> str:
    """The label screen's closest group: its binomial p-value against the threshold.

    >>> screen_margin({"threshold": 0.005, "groups": {"A": {"p_value": 0.9},
    ...     "B": {"p_value": 1e-9}, "C": {"p_value": None}}})
    'screen margin: p=1e-09[B] vs 0.005'
    """
    tested = [(g["p_value"], name) for name, g in (screen or {}).get("groups", {}).items()]
    tested = [(p, name) for p, name in tested if p is not None]
    if not screen or not tested:
        return ""
    p, group = min(tested)
    return f"screen margin: p={p:.2g}[{group}] vs {screen['threshold']:.2g}"


def describe(seq: int, summary: dict[str, Any], served: int | None, margins: str = "") -> str:
    """One progress line for a processed window (with its margins, when given)."""
    drift = [k for k, v in summary.get("drift", {}).items() if v]
    parts = [f"window {seq:>3}"]
    acc = summary.get("prequential_accuracy", {})
    if acc:
        parts.append("acc " + " ".join(f"{g}={a:.2f}" for g, a in acc.items()))
    if drift:
        groups = summary.get("drifted_groups", {})
        parts.append("DRIFT " + ", ".join(f"{k}[{','.join(groups.get(k, []))}]" for k in drift))
    elif summary.get("champion_before") is not None:
        parts.append("no drift")
    screen = summary.get("screen") or {}
    suspect = [g for g, v in screen.get("groups", {}).items() if v["suspect"]]
    if suspect:
        parts.append(f"LABELS SUSPECT in {','.join(suspect)}: {screen['quarantined']} quarantined")
    adaptation = summary.get("adaptation")
    if adaptation:
        groups = ",".join(adaptation["groups"])
        if adaptation.get("closed") == seq:
            parts.append(f"adaptation of {groups} from window {adaptation['opened']} closed: back")
        elif adaptation.get("closed") is None:
            parts.append(f"adapting {groups} (from window {adaptation['opened']})")
    if summary.get("promoted"):
        parts.append(f"v{summary['promoted']} promoted")
    if summary.get("rejected"):
        parts.append(
            f"v{summary['rejected']} REJECTED by gate: " + "; ".join(summary["gate_reasons"])
        )
    if summary.get("error"):
        parts.append(f"update failed: {summary['error']}")
    if summary.get("note"):
        parts.append(summary["note"])
    parts.append(f"serving v{served}" if served else "no champion yet")
    if margins:
        parts.append(margins)
    return " | ".join(parts)


def _serve(send_images: SendImages, stream: str, samples: list[dict[str, Any]]) -> list[int]:
    """Send a window's images to predict before their labels, with their ids and groups (the
    broken samples left out: predict refuses a call with an image it cannot read); the
    versions that served them."""
    good = [s for s in samples if not str(s.get("id", "")).startswith("bad-")]
    versions = []
    for start in range(0, len(good), CALL_SIZE):
        call = good[start : start + CALL_SIZE]
        answer = send_images(
            stream, [s["image"] for s in call], [s["id"] for s in call], [s["group"] for s in call]
        )
        versions.append(int(answer["model_version"]))
    return versions


def traffic_lines(service: Service, stream_id: int, after: int) -> tuple[list[str], int]:
    """A progress line per traffic window tested after number ``after``, and the last one."""
    with service.store.session() as session:
        rows = session.execute(
            select(TrafficWindow.seq, TrafficWindow.summary)
            .where(
                TrafficWindow.stream_id == stream_id,
                TrafficWindow.state == "tested",
                TrafficWindow.seq > after,
            )
            .order_by(TrafficWindow.seq)
        ).all()
    lines = []
    for seq, summary in rows:
        summary = summary or {}
        parts = [f"traffic window {seq:>3} ({summary.get('images', 0)} served images)"]
        if not summary.get("tested"):
            parts.append(f"untested: {summary.get('note', '')}")
        else:
            verdict = f"DRIFT[{','.join(summary['groups'])}]" if summary["drift"] else "no drift"
            parts.append(verdict + " before any of their labels")
            tests = [summary[k] for k in ("covariate", "prediction")]
            parts.append(
                "traffic margin: "
                + ", ".join(
                    f"{name} p={min([t['p_value'], *t['per_group'].values()]):.2g} "
                    f"vs {t['threshold']:.2g}"
                    for name, t in zip(("covariate", "predicted classes"), tests, strict=True)
                )
            )
        lines.append(" | ".join(parts))
        after = seq
    return lines, after


def run_demo(
    service: Service,
    send_samples: SendSamples,
    send_images: SendImages,
    plan: DemoPlan,
    *,
    stream: str = "demo",
    echo: Callable[[str], None] = print,
    window_timeout: float = 300.0,
    windows: Iterable[tuple[int, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any]:
    """Play the demo stream (``windows``, by default the digits of ``plan``) as production
    would: each window's images go to predict first (once a champion serves), and its labels
    follow :data:`LABEL_DELAY` windows later; wait for each labelled window to be processed,
    return the summary."""
    started = time.perf_counter()
    accepted = rejected = 0
    served: list[int] = []
    stream_id: int | None = None
    tested = 0
    waiting: deque[tuple[int, list[dict[str, Any]]]] = deque()

    def label(window: int, samples: list[dict[str, Any]]) -> None:
        nonlocal accepted, rejected, stream_id, tested
        for start in range(0, len(samples), CALL_SIZE):
            result = send_samples(stream, samples[start : start + CALL_SIZE])
            accepted += len(result["accepted"])
            rejected += len(result["rejected"])
        if stream_id is None:
            with service.store.session() as session:
                stream_id = service.store.stream(session, stream).id
        processed = _wait_processed(service, stream_id, window, window_timeout)
        lines, tested = traffic_lines(service, stream_id, tested)
        for line in lines:
            echo(line)
        decided = processed.summary or {}
        version = service.registry.champion(stream_id)
        margins = window_margins(service, stream_id, window, decided)
        echo(describe(window, decided, version, margins))

    for window, samples in windows if windows is not None else demo_stream(plan):
        if stream_id is not None and service.registry.champion(stream_id) is not None:
            served += _serve(send_images, stream, samples)
        waiting.append((window, samples))
        if len(waiting) > LABEL_DELAY:
            label(*waiting.popleft())
    while waiting:
        label(*waiting.popleft())
    summary = summarise(service, stream, plan)
    echo(f"predict served versions {sorted(set(served))} while the stream ran")
    summary.update(
        samples_accepted=accepted,
        samples_rejected=rejected,
        seconds=round(time.perf_counter() - started, 1),
    )
    return summary


def summarise(service: Service, stream_name: str, plan: DemoPlan) -> dict[str, Any]:
    """The run's JSON line, read from the store: what the service decided."""
    with service.store.session() as session:
        stream = service.store.stream(session, stream_name)
        windows = list(
            session.scalars(
                select(Window)
                .where(Window.stream_id == stream.id, Window.state == "processed")
                .order_by(Window.seq)
            )
        )
        versions = list(
            session.scalars(
                select(ModelVersion)
                .where(ModelVersion.stream_id == stream.id)
                .order_by(ModelVersion.version)
            )
        )
        alert_counts = dict(
            session.execute(
                select(Alert.kind, func.count())
                .where(Alert.stream_id == stream.id)
                .group_by(Alert.kind)
            ).all()
        )
        last = [w.id for w in windows[-3:]]
        holdout = load_batch(session, stream, last, split="holdout")
        served = served_accuracy(session, stream.id)
        traffic_drift = traffic_drift_windows(session, stream.id)
    champion = service.registry.champion(stream.id)
    accuracy: dict[str, float] = {}
    if champion is not None and len(holdout):
        model = service.version(stream_name, champion).model
        pred, _ = predict(model, to_float(holdout.x))
        metrics = evaluate_by_group(holdout.y, pred.numpy(), holdout.groups)
        accuracy = {g: round(m["accuracy"], 4) for g, m in metrics.by_group.items()}
    promoted = [v.version for v in versions if v.status in ("champion", "retired")]
    return {
        "windows": len(windows),
        "samples_accepted": 0,
        "samples_rejected": 0,
        "shift_windows": plan.shift_windows,
        "corrupted_windows": plan.corrupted_windows,
        "drift_windows": [w.seq for w in windows if w.drifted],
        "promoted_versions": promoted,
        "rejected_versions": [v.version for v in versions if v.status == "rejected"],
        "champion": champion,
        "accuracy_by_group": accuracy,
        "alerts": dict(sorted(Counter(alert_counts).items())),
        "adaptations": adaptations([w.summary or {} for w in windows]),
        "quarantined": {
            str(w.seq): (w.summary or {})["screen"]["quarantined"]
            for w in windows
            if ((w.summary or {}).get("screen") or {}).get("quarantined")
        },
        "traffic_drift_windows": traffic_drift,
        "served_accuracy_by_group": {
            g: round(t.accuracy, 4)
            for g, t in sorted(served.by_group.items())
            if t.accuracy is not None
        },
        "seconds": 0.0,
    }


def traffic_drift_windows(session: Session, stream_id: int) -> list[int]:
    """The (labelled) windows whose images, served before their labels, were in a traffic
    window that drifted: traffic windows have numbers of their own, and the demo's labels
    carry the ids its predictions were made under."""
    return sorted(
        set(
            session.scalars(
                select(Window.seq)
                .join(Sample, Sample.window_id == Window.id)
                .join(
                    Traffic,
                    (Traffic.stream_id == Sample.stream_id)
                    & (Traffic.traffic_id == Sample.sample_id),
                )
                .join(TrafficWindow, TrafficWindow.id == Traffic.window_id)
                .where(
                    TrafficWindow.stream_id == stream_id,
                    TrafficWindow.state == "tested",
                    TrafficWindow.summary["drift"].as_boolean(),
                )
            )
        )
    )


def adaptations(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each adaptation of the stream as it last stood: groups, opening and closing windows,
    baseline and latest prequential accuracies (fractions).

    >>> a = {"opened": 3, "groups": ["B"], "baseline": {"B": 0.9}, "reason": "", "final": {}}
    >>> adaptations([{"adaptation": a}, {"adaptation": {**a, "closed": 5, "final": {"B": 0.88}}}])
    [{'groups': ['B'], 'opened': 3, 'closed': 5, 'baseline': {'B': 0.9}, 'final': {'B': 0.88}}]
    """
    latest: dict[int, dict[str, Any]] = {}
    for summary in summaries:
        adaptation = summary.get("adaptation")
        if adaptation:
            latest[adaptation["opened"]] = adaptation
    return [
        {
            "groups": a["groups"],
            "opened": a["opened"],
            "closed": a.get("closed"),
            "baseline": a["baseline"],
            "final": a.get("final", {}),
        }
        for _, a in sorted(latest.items())
    ]
