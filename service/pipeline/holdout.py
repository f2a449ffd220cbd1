"""The gate's holdout: held-out samples of the latest windows, bounded per window and group,
and the recent champions that served those windows (the chain guard's)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from service.config import Settings
from service.store.batches import Batch, load_batch
from service.store.engine import Store
from service.store.schema import Stream, Window


@dataclass(frozen=True)
class GateHoldout:
    """The samples the gate compares on, with each sample's window number (``Window.seq``)."""

    batch: Batch
    window_numbers: np.ndarray


def gate_holdout(store: Store, stream: Stream, settings: Settings) -> GateHoldout:
    """Held-out samples of the latest ``gate_windows`` windows (bounded per window, stratified
    by group): memory and the gate's Holm family stay bounded as a stream ages. Quarantined
    windows and samples are left out."""
    with store.session() as session:
        latest = session.execute(
            select(Window.id, Window.seq)
            .where(
                Window.stream_id == stream.id,
                Window.state.in_(("processed", "processing")),
                Window.quarantined.is_(False),
            )
            .order_by(Window.seq.desc())
            .limit(settings.gate_windows)
        ).all()[::-1]
        holdout = load_batch(session, stream, [w.id for w in latest], split="holdout")
    keep = np.zeros(len(holdout), dtype=bool)
    rng = np.random.default_rng(settings.seed)
    for w in np.unique(holdout.windows):
        index = np.flatnonzero(holdout.windows == w)
        share = min(1.0, settings.gate_max_per_window / len(index))
        for g in np.unique(holdout.groups[index]):
            members = index[holdout.groups[index] == g]
            take = max(1, round(share * len(members)))
            keep[rng.choice(members, size=min(take, len(members)), replace=False)] = True
    chosen = holdout.where(keep)
    seq = {w.id: w.seq for w in latest}
    return GateHoldout(chosen, np.array([seq[int(w)] for w in chosen.windows]))


def recent_champions(store: Store, holdout: GateHoldout, current: int, limit: int) -> list[int]:
    """The newest ``limit`` versions other than ``current`` that served a window of the
    holdout: the champions whose accuracy on data that still exists a candidate is held to."""
    window_ids = sorted({int(w) for w in holdout.batch.windows})
    with store.session() as session:
        served = session.scalars(
            select(Window.served_by)
            .where(Window.id.in_(window_ids), Window.served_by.is_not(None))
            .distinct()
        ).all()
    return sorted({int(v) for v in served if v is not None and v != current}, reverse=True)[:limit]
