"""The alerts window processing raises: a rejected candidate, a failed update, v1 not served."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.alerts import records as alerts
from service.pipeline.adaptation import Adaptation
from service.pipeline.gate import GateReport
from service.store.engine import Store
from service.store.schema import Alert, Stream


def candidate_rejected(
    store: Store,
    stream: Stream,
    window: int,
    *,
    candidate: int,
    champion: int | None,
    report: GateReport,
) -> None:
    """``fairness.regression`` (a group or window got worse) or ``fairness.gap`` (only the gap)."""
    with store.session() as session:
        alerts.raise_alert(
            session,
            stream_id=stream.id,
            kind="fairness.regression" if report.regressed else "fairness.gap",
            severity="critical",
            subject=f"{stream.name} v{candidate}",
            message=(
                f"candidate v{candidate} rejected on window {window}; "
                f"v{champion} keeps serving: {'; '.join(report.reasons)}"
            ),
            payload={
                "window": window,
                "candidate": candidate,
                "champion": champion,
                "groups": report.failed_groups,
                "windows": report.failed_windows,
                "reasons": report.reasons,
            },
        )


def adaptation_behind(
    store: Store, stream: Stream, window: int, adaptation: Adaptation, behind: dict[str, float]
) -> None:
    """``fairness.gap``: groups of an adaptation still measurably below their baselines after
    its patience (``behind``: their accuracy over the latest windows); it stays open and
    keeps training."""
    shown = ", ".join(
        f"{g} {acc} over the latest windows (baseline {adaptation.baseline.get(g)})"
        for g, acc in sorted(behind.items())
    )
    subject = f"{stream.name} adaptation from window {adaptation.opened}"
    with store.session() as session:
        raised = session.scalar(
            select(Alert.id).where(
                Alert.stream_id == stream.id, Alert.kind == "fairness.gap", Alert.subject == subject
            )
        )
        if raised is not None:  # a retried window: raised already
            return
        alerts.raise_alert(
            session,
            stream_id=stream.id,
            kind="fairness.gap",
            severity="warning",
            subject=subject,
            message=(
                f"after {adaptation.windows} windows of adaptation (from window "
                f"{adaptation.opened}) still behind: {shown or '-'}"
            ),
            payload={
                "window": window,
                "groups": sorted(behind),
                "adaptation": adaptation.to_dict(),
            },
        )


def update_failed(store: Store, stream: Stream, window: int, error: str) -> None:
    """An update crashed; the champion (if any) keeps serving."""
    with store.session() as session:
        alerts.raise_alert(
            session,
            stream_id=stream.id,
            kind="update.failed",
            severity="critical",
            subject=f"{stream.name} window {window}",
            message=f"update on window {window} failed; the champion keeps serving: {error}",
            payload={"window": window, "error": error},
        )


def bootstrap_not_served(
    store: Store, stream: Stream, version: int, reason: str, report: dict[str, Any]
) -> None:
    """Version 1 was trained but is not accurate enough to serve."""
    with store.session() as session:
        alerts.raise_alert(
            session,
            stream_id=stream.id,
            kind="update.failed",
            severity="warning",
            subject=f"{stream.name} v{version}",
            message=f"version {version} not served: {reason}",
            payload=report,
        )
