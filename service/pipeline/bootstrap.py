"""The cold start: version 1, trained from scratch once enough samples arrived, serves if accurate.

The windows processed before version 1 had no champion (``served_by`` is null); their
samples and the current window's train version 1 with ``bootstrap_epochs``, and its
accuracy on their held-out samples decides whether it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from learners.evaluation import predict
from learners.models import to_float
from service.context import Service
from service.models.promotion import promote
from service.pipeline import notifications
from service.pipeline.decision import Decision, update_failed
from service.pipeline.inputs import WindowInputs
from service.pipeline.timing import Stopwatch
from service.pipeline.update import TrainingRun, fresh_model, train, write_candidate
from service.store.batches import Batch, load_batch
from service.store.schema import Window


@dataclass(frozen=True)
class Bootstrap:
    """What the cold start did: ``decision`` is None while it waits for samples."""

    decision: Decision | None
    note: str = ""


def _unserved_samples(service: Service, inputs: WindowInputs) -> Batch:
    """Every sample of the windows processed without a champion, and of this window."""
    with service.store.session() as session:
        earlier = session.scalars(
            select(Window.id).where(
                Window.stream_id == inputs.stream.id,
                Window.state == "processed",
                Window.served_by.is_(None),
            )
        )
        return load_batch(session, inputs.stream, [*earlier, inputs.window.id])


def bootstrap(service: Service, inputs: WindowInputs, clock: Stopwatch) -> Bootstrap:
    """Train version 1 once ``bootstrap_samples`` training samples arrived; promote it if its
    holdout accuracy reaches ``min_bootstrap_accuracy``, else reject it and alert."""
    s, stream = service.settings, inputs.stream
    data = _unserved_samples(service, inputs)
    samples, holdout = data.where(data.splits == "train"), data.where(data.splits == "holdout")
    if len(samples) < s.bootstrap_samples:
        return Bootstrap(
            None,
            f"waiting for {s.bootstrap_samples} training samples "
            f"to train version 1 ({len(samples)} so far)",
        )
    run = TrainingRun.for_window(s, inputs.window.seq, epochs=s.bootstrap_epochs)
    candidate = None
    try:
        model = fresh_model(s, stream)
        with clock.stage("update"):
            trained = train(s, model, samples, None, run)
        written = write_candidate(
            service.registry,
            s,
            stream,
            trained,
            run,
            parent=None,
            windows=sorted(set(data.windows)),
        )
        candidate = written.version
        pred, _ = predict(written.model, to_float(holdout.x))
        accuracy = float((pred.numpy() == holdout.y).mean()) if len(holdout) else 0.0
    except Exception as exc:  # the champion (none yet) keeps serving; the error is reported
        return Bootstrap(update_failed(service, inputs, candidate, exc))
    report = {"bootstrap": True, "accuracy": accuracy, "n": len(holdout)}
    if accuracy >= s.min_bootstrap_accuracy:
        promote(service, stream.name, candidate, by="learner", reason="bootstrap", report=report)
        return Bootstrap(Decision(candidate, True, promoted=candidate))
    service.registry.set_status(stream.id, candidate, "rejected", report)
    reason = f"bootstrap accuracy {accuracy:.3f} below {s.min_bootstrap_accuracy}"
    notifications.bootstrap_not_served(service.store, stream, candidate, reason, report)
    return Bootstrap(Decision(candidate, False, (reason,), rejected=candidate))
