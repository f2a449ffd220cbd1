"""Rollback: put an earlier model version back as champion, recording who and why.

Without ``to``, the target is the previous champion: the newest ``retired`` version
older than the current champion (a promotion marks the version it replaces
``retired``). The swap itself is :meth:`Registry.promote`, so it is one transaction
and the version rolled back from becomes ``retired`` in turn; a second rollback
therefore goes further back instead of swapping the same two versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from service.context import Service
from service.errors import InvalidRequest, ModelNotFound
from service.store.schema import ModelVersion
from service.store.streams import champion_version


def rollback_target(service: Service, stream: str, to: int | None = None) -> tuple[int, int, int]:
    """``(stream_id, current champion, version to roll back to)``; raises when there is none."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        current = champion_version(session, record.id)
        if current is None:
            raise ModelNotFound(f"stream {stream!r} has no champion to roll back from")
        if to is None:
            target = session.scalar(
                select(func.max(ModelVersion.version)).where(
                    ModelVersion.stream_id == record.id,
                    ModelVersion.status == "retired",
                    ModelVersion.version < current,
                )
            )
            if target is None:
                raise ModelNotFound(
                    f"stream {stream!r} has no retired version older than its champion "
                    f"v{current} to roll back to"
                )
            return record.id, current, target
        exists = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.stream_id == record.id, ModelVersion.version == to
            )
        )
        if exists is None:
            raise ModelNotFound(f"stream {stream!r} has no version {to}")
        if to == current:
            raise InvalidRequest(f"v{to} is already the champion of stream {stream!r}")
        if to > current:
            raise InvalidRequest(
                f"v{to} is newer than the champion v{current} of stream {stream!r}: "
                "rollback only goes back; promote it instead"
            )
        return record.id, current, to


def rollback(
    service: Service, stream: str, *, by: str, reason: str, to: int | None = None
) -> dict[str, Any]:
    """Make the previous champion (or ``to``) the champion again.

    The target's files are loaded and checked against their digests before the pointer
    moves, so a rollback never swaps in a version that cannot serve. Returns
    ``{"stream", "champion", "previous"}``.
    """
    stream_id, current, target = rollback_target(service, stream, to)
    service.version(stream, target)  # raises ModelNotFound when missing or tampered on disk
    previous = service.registry.promote(
        stream_id, target, by=by, reason=f"rollback from v{current}: {reason}"
    )
    return {"stream": stream, "champion": target, "previous": previous}
