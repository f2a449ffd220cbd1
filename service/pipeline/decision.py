"""What becomes of a candidate: promoted, rejected by the gate, or rejected by its own crash."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.context import Service
from service.models.promotion import promote
from service.pipeline import notifications
from service.pipeline.gate import GateReport
from service.pipeline.inputs import WindowInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The end of an update (or of the cold start): what it wrote and what became of it."""

    candidate: int | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()
    promoted: int | None = None
    rejected: int | None = None
    error: str | None = None


def decide(service: Service, inputs: WindowInputs, candidate: int, report: GateReport) -> Decision:
    """Promote the candidate if it passed the gate; else reject it and raise the alert."""
    stream, seq = inputs.stream, inputs.window.seq
    reasons = tuple(report.reasons)
    if report.passed:
        promote(
            service,
            stream.name,
            candidate,
            by="learner",
            reason=f"gate passed on window {seq}",
            report=report.to_dict(),
        )
        return Decision(candidate, True, reasons, promoted=candidate)
    service.registry.set_status(stream.id, candidate, "rejected", report.to_dict())
    notifications.candidate_rejected(
        service.store,
        stream,
        seq,
        candidate=candidate,
        champion=inputs.champion_version,
        report=report,
    )
    return Decision(candidate, False, reasons, rejected=candidate)


def update_failed(
    service: Service, inputs: WindowInputs, candidate: int | None, exc: Exception
) -> Decision:
    """An update crashed: its candidate (if written) is rejected; the champion keeps serving."""
    stream = inputs.stream
    log.exception("update failed", extra={"stream": stream.name})
    error = f"{type(exc).__name__}: {exc}"
    if candidate is not None:
        service.registry.set_status(stream.id, candidate, "rejected", {"error": error})
    notifications.update_failed(service.store, stream, inputs.window.seq, error)
    return Decision(candidate, error=error)
