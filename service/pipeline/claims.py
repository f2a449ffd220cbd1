"""A window's claim: taken by one learner, given back after an error, released as processed.

Windows of a stream are processed one at a time in arrival order: a worker claims the
oldest closed window only while no other window of the stream is being processed, so at
most one learner works on a stream even when several ``process_window`` tasks run at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from service.context import Service
from service.quarantine.records import drop_window_hold
from service.store.schema import DriftReport, Stream, Window, utcnow
from service.store.streams import lock_stream


def claim_next_window(service: Service, stream_id: int) -> int | None:
    """Claim the oldest closed window of a stream unless another is being processed."""
    stale = utcnow() - timedelta(seconds=service.settings.window_claim_timeout)
    with service.store.session() as session:
        lock_stream(session, stream_id)
        busy = session.scalar(
            select(Window.id).where(
                Window.stream_id == stream_id,
                Window.state == "processing",
                Window.claimed_at > stale,
            )
        )
        if busy is not None:
            return None
        window = session.scalar(
            select(Window)
            .where(Window.stream_id == stream_id, Window.state.in_(("closed", "processing")))
            .order_by(Window.seq)
            .limit(1)
        )
        if window is None:
            return None
        window.state, window.claimed_at = "processing", utcnow()
        return window.id


def release_window(service: Service, window_id: int) -> None:
    """Give a claimed window back (after an error outside the update) so a retry can take it."""
    with service.store.session() as session:
        session.execute(
            update(Window)
            .where(Window.id == window_id, Window.state == "processing")
            .values(state="closed", claimed_at=None)
        )


def discard_dead_attempt(service: Service, stream: Stream, window_id: int) -> None:
    """Undo what an earlier attempt at this window left when its learner died.

    A window becomes ``processed`` only at the end of its processing, so drift reports
    or an undecided candidate of this window can only come from an attempt that died
    (kill -9, power loss) or failed (the store went away) after its claim; the retry
    removes them, so that the window ends with one set of reports and one decided
    candidate. Alerts, being notifications already sent, stay.
    """
    with service.store.session() as session:
        session.execute(delete(DriftReport).where(DriftReport.window_id == window_id))
        # A hold of the whole window by the dead attempt's rejection: the retry decides again
        # and must train and gate on the window itself.
        drop_window_hold(session, window_id)
    service.registry.discard_unfinished(stream, window_id)


def finish_window(
    service: Service,
    window_id: int,
    *,
    served_by: int | None,
    drifted: bool,
    summary: dict[str, Any],
) -> None:
    """Mark a claimed window processed, with the champion that scored it and its summary."""
    with service.store.session() as session:
        window = session.get(Window, window_id)
        if window is None:
            raise LookupError(f"window {window_id} vanished while it was being processed")
        window.state, window.processed_at = "processed", utcnow()
        window.served_by = served_by
        window.drifted = drifted
        window.summary = summary
