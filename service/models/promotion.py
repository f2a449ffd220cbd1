"""Promotion and rollback: the champion pointer moves, recording who and why.

Both are the one path of the API (``POST /v1/models/{version}/promote``,
``POST /v1/models/rollback``) and the CLI (``learnstream promote``, ``learnstream
rollback``); the learner promotes a candidate that passed the gate through ``promote`` too.
Before the pointer moves, the target is loaded from disk and its files are checked against
their manifest and the manifest's digests against the store's, so a missing or tampered
version never becomes champion.

Without ``to``, a rollback's target is the previous champion: the newest ``retired``
version older than the current champion (a promotion marks the version it replaces
``retired``). The swap itself is :meth:`Registry.promote`, so it is one transaction and the
version rolled back from becomes ``retired`` in turn; a second rollback therefore goes
further back instead of swapping the same two versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.context import Service
from service.errors import InvalidRequest, ModelNotFound
from service.models.registry import LoadedVersion
from service.store.schema import ModelVersion
from service.store.streams import champion_version

NO_VERSION = "stream {stream!r} has no version {version}"
MANIFEST_MISMATCH = (
    "the manifest of v{version} of stream {stream!r} does not match the digests the store recorded"
)
NO_CHAMPION = "stream {stream!r} has no champion to roll back from"
NO_RETIRED = (
    "stream {stream!r} has no retired version older than its champion v{current} to roll back to"
)
ALREADY_CHAMPION = "v{version} is already the champion of stream {stream!r}"
ONLY_BACK = (
    "v{version} is newer than the champion v{current} of stream {stream!r}: "
    "rollback only goes back; promote it instead"
)


def _stored_digests(session: Session, stream_id: int, stream: str, version: int) -> dict[str, str]:
    """The file digests the store recorded for ``version``; raises when there is no such row."""
    digests = session.scalar(
        select(ModelVersion.digests).where(
            ModelVersion.stream_id == stream_id, ModelVersion.version == version
        )
    )
    if digests is None:
        raise ModelNotFound(NO_VERSION.format(stream=stream, version=version))
    return dict(digests)


def _check_files(
    service: Service, stream: str, version: int, digests: dict[str, str]
) -> LoadedVersion:
    """Load ``version`` from disk (uncached, so its files are read now): raises
    :class:`ModelNotFound` when it is missing, a file does not match the manifest, or the
    manifest does not match what the store recorded."""
    loaded = service.registry.load(stream, version)
    if loaded.manifest["digests"] != digests:
        raise ModelNotFound(MANIFEST_MISMATCH.format(stream=stream, version=version))
    return loaded


def load_checked(service: Service, stream: str, version: int) -> LoadedVersion:
    """``version`` of ``stream`` read from disk, its files checked as a promotion checks them."""
    with service.store.session() as session:
        stream_id = service.store.stream(session, stream).id
        digests = _stored_digests(session, stream_id, stream, version)
    return _check_files(service, stream, version, digests)


def promote(
    service: Service,
    stream: str,
    version: int,
    *,
    by: str,
    reason: str,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion once its files are checked (``report``: the gate's, kept
    with the version); returns ``{"stream", "champion", "previous"}``."""
    with service.store.session() as session:
        stream_id = service.store.stream(session, stream).id
        digests = _stored_digests(session, stream_id, stream, version)
    _check_files(service, stream, version, digests)
    previous = service.registry.promote(stream_id, version, by=by, reason=reason, report=report)
    return {"stream": stream, "champion": version, "previous": previous}


def _rollback_target(
    session: Session, stream_id: int, stream: str, to: int | None
) -> tuple[int, int]:
    """``(current champion, version to roll back to)``; raises when there is none."""
    current = champion_version(session, stream_id)
    if current is None:
        raise ModelNotFound(NO_CHAMPION.format(stream=stream))
    if to is None:
        target = session.scalar(
            select(func.max(ModelVersion.version)).where(
                ModelVersion.stream_id == stream_id,
                ModelVersion.status == "retired",
                ModelVersion.version < current,
            )
        )
        if target is None:
            raise ModelNotFound(NO_RETIRED.format(stream=stream, current=current))
        return current, target
    _stored_digests(session, stream_id, stream, to)  # an unknown version is 404 before 422
    if to == current:
        raise InvalidRequest(ALREADY_CHAMPION.format(stream=stream, version=to))
    if to > current:
        raise InvalidRequest(ONLY_BACK.format(stream=stream, version=to, current=current))
    return current, to


def rollback(
    service: Service, stream: str, *, by: str, reason: str, to: int | None = None
) -> dict[str, Any]:
    """Make the previous champion (or ``to``) the champion again once its files are checked;
    returns ``{"stream", "champion", "previous"}``."""
    with service.store.session() as session:
        stream_id = service.store.stream(session, stream).id
        current, target = _rollback_target(session, stream_id, stream, to)
        digests = _stored_digests(session, stream_id, stream, target)
    _check_files(service, stream, target, digests)
    previous = service.registry.promote(
        stream_id,
        target,
        by=by,
        reason=f"rollback from v{current}: {reason}",
        event="model.rolled_back",
    )
    return {"stream": stream, "champion": target, "previous": previous}
