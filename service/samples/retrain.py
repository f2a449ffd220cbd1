"""A candidate trained without deleted samples, gated against the champion like any other.

Every version after a deletion's samples arrived carries them in its weights: a version
starts from its parent's. No fine-tuning of the champion can take them out, so the
candidate starts where version 1 did: from the stream's architecture and weights file,
trained from scratch (``bootstrap_epochs``) on the training samples that remain in the
latest ``gate_windows`` processed windows, with a fresh strategy state (its buffer holds
remaining samples only). It has no parent. The gate then compares it with the champion on
the same holdout as any candidate (:func:`service.pipeline.gate.judge`): a pass promotes
it, a failure rejects it with the usual ``fairness.regression`` alert, and the champion
keeps serving. It runs as the Celery task ``learnstream.retrain`` on queue ``learn`` (the
stream's learner, so never beside a window's update), or in the CLI's process on the
in-process broker.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from service.context import Service
from service.models.promotion import promote
from service.pipeline import notifications
from service.pipeline.gate import judge
from service.pipeline.holdout import gate_holdout, recent_champions
from service.pipeline.update import TrainingRun, fresh_model, train, write_candidate
from service.store.batches import load_batch
from service.store.schema import Window

log = logging.getLogger(__name__)

NO_CHAMPION = "stream {stream!r} has no champion: version 1 will train on what remains"
TOO_FEW = (
    "only {n} training samples remain in the latest {windows} processed windows of stream "
    "{stream!r}; a retrained candidate needs bootstrap_samples={needed}"
)


@dataclass(frozen=True)
class Retrained:
    """What a retrain did: the candidate and the gate's verdict, or why it trained none."""

    stream: str
    deletion: int | None
    candidate: int | None = None
    gate_passed: bool | None = None
    promoted: int | None = None
    rejected: int | None = None
    reasons: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_without_deleted(
    service: Service, stream_name: str, deletion: int | None = None
) -> Retrained:
    """Train a candidate from scratch on what remains and gate it against the champion."""
    with service.store.session() as session:
        stream = service.store.stream(session, stream_name)
        service = service.for_stream(stream)
        s = service.settings
        latest = session.execute(
            select(Window.id, Window.seq, Window.summary)
            .where(
                Window.stream_id == stream.id,
                Window.state == "processed",
                Window.quarantined.is_(False),
            )
            .order_by(Window.seq.desc())
            .limit(s.gate_windows)
        ).all()[::-1]
        window_ids = [int(w.id) for w in latest]
        samples = load_batch(session, stream, window_ids, split="train")
    champion = service.registry.champion(stream.id)
    if champion is None or not latest:
        return Retrained(stream_name, deletion, note=NO_CHAMPION.format(stream=stream_name))
    if len(samples) < s.bootstrap_samples:
        note = TOO_FEW.format(
            n=len(samples), windows=s.gate_windows, stream=stream_name, needed=s.bootstrap_samples
        )
        return Retrained(stream_name, deletion, note=note)
    seq = int(latest[-1].seq)
    run = TrainingRun.for_window(s, seq, epochs=s.bootstrap_epochs)
    model = fresh_model(s, stream)
    trained = train(s, model, samples, None, run)
    written = write_candidate(
        service.registry, s, stream, trained, run, parent=None, windows=window_ids
    )
    holdout = gate_holdout(service.store, stream, s)
    earlier = {
        v: service.version(stream.name, v).model
        for v in recent_champions(service.store, holdout, champion, s.gate_chain_versions)
    }
    report = judge(
        service.version(stream.name, champion).model,
        written.model,
        holdout,
        s,
        eras=(latest[-1].summary or {}).get("eras") or {},
        earlier=earlier,
        classes=list(stream.classes),
    )
    reasons = list(report.reasons)
    why = f"retrained without deleted samples (deletion #{deletion})" if deletion else "retrained"
    if report.passed:
        promote(
            service, stream_name, written.version, by="retrain", reason=why, report=report.to_dict()
        )
        outcome = Retrained(
            stream_name, deletion, written.version, True, promoted=written.version, reasons=reasons
        )
    else:
        service.registry.set_status(stream.id, written.version, "rejected", report.to_dict())
        notifications.candidate_rejected(
            service.store, stream, seq, candidate=written.version, champion=champion, report=report
        )
        outcome = Retrained(
            stream_name, deletion, written.version, False, rejected=written.version, reasons=reasons
        )
    log.info("retrained without deleted samples", extra=outcome.to_dict())
    return outcome
