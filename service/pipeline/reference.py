"""The champion's reference: what a window is compared with, loaded and embedded once.

The reference is the held-out samples of the latest processed windows, newest first, as
many as give ``reference_size`` of them, each group's only from its era on
(:mod:`service.pipeline.eras`): a swap keeps the reference whole, while a shifted group is
compared with its new images only. The champion runs once over the samples it never
trained on, which gives both the features of the held-out reference (penultimate feature
space) and its error history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models.registry import LoadedVersion
from service.pipeline.eras import in_era
from service.pipeline.inputs import model_outputs
from service.store.batches import Batch, concat, load_batch
from service.store.engine import Store
from service.store.schema import Sample, Stream, Window


@dataclass(frozen=True)
class Reference:
    """What a window is compared with, all from windows the champion knows.

    ``holdout``: held-out samples, newest windows first, at most ``reference_size`` (the
    covariate reference); ``labels``: every sample of those windows (the label reference);
    ``features``: the champion's penultimate features of ``holdout`` (None in the encoder
    feature space); ``error_history``: the champion's errors on the samples it never trained
    on, oldest first, per group (the concept detector's history); ``probabilities``: the
    champion's class probabilities on ``holdout`` (the label screen's running rate).
    """

    holdout: Batch
    labels: Batch
    features: np.ndarray | None
    error_history: dict[str, list[bool]]
    probabilities: np.ndarray


SCAN = 200  # processed windows read back at most to fill a reference


def reference_window_ids(
    session: Session, stream_id: int, seq: int, eras: Mapping[str, int], limit: int
) -> list[int]:
    """Ids of the reference windows before window number ``seq``, newest first, up to the one
    that brings ``limit`` held-out samples of groups in their era (quarantine left out); what
    the retention sweep must keep."""
    rows = session.execute(
        select(Window.id, Window.seq)
        .where(
            Window.stream_id == stream_id,
            Window.state == "processed",
            Window.seq < seq,
            Window.quarantined.is_(False),
        )
        .order_by(Window.seq.desc())
        .limit(SCAN)
    ).all()
    numbers = {int(r.id): int(r.seq) for r in rows}
    held_out: dict[int, int] = {}
    for window_id, group, count in session.execute(
        select(Sample.window_id, Sample.group, func.count())
        .where(
            Sample.stream_id == stream_id,
            Sample.window_id.in_(list(numbers)),
            Sample.split == "holdout",
            Sample.quarantined.is_(False),
        )
        .group_by(Sample.window_id, Sample.group)
    ).all():
        if numbers[window_id] >= eras.get(str(group), 0):
            held_out[window_id] = held_out.get(window_id, 0) + int(count)
    chosen, n = [], 0
    for window_id in numbers:
        chosen.append(window_id)
        n += held_out.get(window_id, 0)
        if n >= limit:
            break
    return chosen


def _error_history(unseen: Batch, predictions: np.ndarray) -> dict[str, list[bool]]:
    """Per group, whether each prediction on ``unseen`` was wrong, in arrival (row id) order.

    These give an unbiased error history from the first window after a swap, before the
    champion has scored any window of its own.
    """
    order = np.argsort(unseen.row_ids)
    wrong = predictions[order] != unseen.y[order]
    history: dict[str, list[bool]] = {}
    for group, err in zip(unseen.groups[order], wrong, strict=True):
        history.setdefault(group, []).append(bool(err))
    return history


def load_reference(
    store: Store,
    stream: Stream,
    champion: LoadedVersion,
    *,
    seq: int,
    eras: Mapping[str, int],
    limit: int,
    features: bool,
) -> Reference:
    """The reference of window number ``seq``, bounded by ``limit`` held-out samples;
    ``features``: embed it in the champion's penultimate layer."""
    with store.session() as session:
        learned = [int(w) for w in champion.manifest["windows"]]
        windows = (
            reference_window_ids(session, stream.id, seq, eras, limit)
            or list(
                session.scalars(
                    select(Window.id).where(Window.id.in_(learned), Window.quarantined.is_(False))
                )
            )
            or learned
        )
        data = load_batch(session, stream, windows)
        numbers = dict(
            session.execute(select(Window.id, Window.seq).where(Window.id.in_(windows))).all()
        )
    data = data.where(in_era(data.groups, np.array([numbers[int(w)] for w in data.windows]), eras))
    # Every window up to the champion's last trained one was learned by it or an ancestor.
    last_trained = max((int(w) for w in champion.manifest["windows"]), default=0)
    per_window = [data.where(data.windows == w) for w in windows]
    held_out = [b.where(b.splits == "holdout") for b in per_window]
    unseen = concat(
        [
            b if w > last_trained else h
            for w, b, h in zip(windows, per_window, held_out, strict=True)
        ]
    )
    holdout = concat(held_out)
    if len(holdout) > limit:
        holdout = holdout.where(np.arange(len(holdout)) < limit)
    # The held-out reference is part of what the champion never trained on: one pass serves both.
    outputs = model_outputs(champion.model, unseen.x, features=features)
    row = {int(r): i for i, r in enumerate(unseen.row_ids)}
    rows = [row[int(r)] for r in holdout.row_ids]
    return Reference(
        holdout=holdout,
        labels=concat(per_window),
        features=outputs.features[rows] if outputs.features is not None else None,
        error_history=_error_history(unseen, outputs.predictions),
        probabilities=outputs.probabilities[rows],
    )
