"""The champion's reference: what a window is compared with, loaded and embedded once.

The reference windows are those whose samples describe the champion's world, newest
first: the later windows it scored without drift, then the windows it was trained on.
They are read in one query, as many as give ``reference_size`` held-out samples, and the
champion runs once over the samples it never trained on, which gives both the features of
the held-out reference (penultimate feature space) and its error history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models.registry import LoadedVersion
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
    on, oldest first, per group (the concept detector's history).
    """

    holdout: Batch
    labels: Batch
    features: np.ndarray | None
    error_history: dict[str, list[bool]]


def _reference_windows(
    session: Session, stream_id: int, champion: LoadedVersion, limit: int
) -> list[int]:
    """The reference windows, newest first, up to the one that brings ``limit`` held-out samples."""
    quiet = session.scalars(
        select(Window.id)
        .where(
            Window.stream_id == stream_id,
            Window.state == "processed",
            Window.served_by == champion.version,
            Window.drifted.is_(False),
        )
        .order_by(Window.seq.desc())
    )
    candidates = list(dict.fromkeys([*quiet, *sorted(champion.manifest["windows"], reverse=True)]))
    held_out = dict(
        session.execute(
            select(Sample.window_id, func.count())
            .where(
                Sample.stream_id == stream_id,
                Sample.window_id.in_(candidates),
                Sample.split == "holdout",
            )
            .group_by(Sample.window_id)
        ).all()
    )
    chosen, n = [], 0
    for window_id in candidates:
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
    store: Store, stream: Stream, champion: LoadedVersion, *, limit: int, features: bool
) -> Reference:
    """The champion's reference, bounded by ``limit`` held-out samples; ``features``: embed it
    in the champion's penultimate layer."""
    with store.session() as session:
        windows = _reference_windows(session, stream.id, champion, limit)
        data = load_batch(session, stream, windows)
    trained = set(champion.manifest["windows"])
    per_window = [data.where(data.windows == w) for w in windows]
    held_out = [b.where(b.splits == "holdout") for b in per_window]
    unseen = concat(
        [h if w in trained else b for w, b, h in zip(windows, per_window, held_out, strict=True)]
    )
    holdout = concat(held_out)
    if len(holdout) > limit:
        holdout = holdout.where(np.arange(len(holdout)) < limit)
    # The held-out reference is part of what the champion never trained on: one pass serves both.
    outputs = model_outputs(champion.model, unseen.x, features=features)
    reference_features = None
    if outputs.features is not None:
        row = {int(r): i for i, r in enumerate(unseen.row_ids)}
        reference_features = outputs.features[[row[int(r)] for r in holdout.row_ids]]
    return Reference(
        holdout=holdout,
        labels=concat(per_window),
        features=reference_features,
        error_history=_error_history(unseen, outputs.predictions),
    )
