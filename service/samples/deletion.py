"""Deleting samples with their lineage: the one path of the CLI, the API and the retention sweep.

A deletion

1. selects the stream's samples by criteria (ids, a meta key's value, a group, received
   before a time; all given must hold), or by the rows the retention sweep chose;
2. finds their *lineage*: the versions trained on any of them, i.e. whose windows (or an
   ancestor's: a version starts from its parent's weights) hold one of them in their
   training split (held-out samples are never trained on), or whose strategy state's
   buffer holds one (``buffer_ids`` in its manifest);
3. writes its audit record (``deletions``: who, why, criteria; status ``running``);
4. purges them from every stored strategy state that holds them: the state is rewritten in
   place as a new state of the *same* version (the weights are untouched: they cannot
   forget), its manifest lists the deletion under ``purged`` and the store's digests follow;
5. in one transaction: removes the samples (:func:`service.store.removal.delete_sample_rows`),
   marks the versions trained on them (``trained_on_deleted``) and completes the record;
   an operator's deletion (not the retention sweep's) also removes the traffic rows named
   by the deleted samples' ids or by the ``ids`` it was given: a person's images sent to
   predict are theirs too, labelled or not.

Weights and state derived from samples (EWC/SI importances, LwF's teacher, GDumb's initial
model) keep what they learned: that is what the marker says, and ``retrain`` (a candidate
trained without them, :mod:`service.samples.retrain`) is the remedy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.context import Service
from service.errors import InvalidRequest, LearnstreamError
from service.store.bulk import chunks
from service.store.removal import delete_sample_rows, delete_traffic_rows
from service.store.schema import BY_LENGTH, Deletion, ModelVersion, Sample, Stream, iso, utcnow
from service.store.streams import lock_stream

log = logging.getLogger(__name__)

NO_BY = 'a deletion needs who deletes: --by WHO ("by" over HTTP)'
NO_REASON = 'a deletion needs why: --reason WHY ("reason" over HTTP)'
NO_CRITERIA = (
    "say which samples to delete: --ids, --meta key=value, --group or --before "
    '("ids", "meta", "group", "before" over HTTP)'
)
BAD_BEFORE = (
    "--before {text!r} is not a time: give an ISO 8601 date or time, "
    "e.g. 2024-05-01 or 2024-05-01T12:00:00+00:00"
)
BAD_META = "--meta: expected key=value, got {item!r}"
FILES_CHANGED = (
    "v{version} of stream {stream!r}: {what}; nothing was deleted (check the version's files "
    "before deleting again)"
)
TOO_LONG = "{name} must be 1 to {limit} characters"


class DeletionRefused(LearnstreamError):
    """A deletion cannot go ahead safely; nothing was deleted."""

    status_code = 409


@dataclass(frozen=True)
class Criteria:
    """Which samples of a stream to delete; every criterion given must hold.

    ``rows`` (database ids) is the retention sweep's choice, with ``retention`` describing
    it for the audit record; operators use the others."""

    ids: tuple[str, ...] = ()
    meta: tuple[tuple[str, Any], ...] = ()
    group: str | None = None
    before: datetime | None = None
    rows: tuple[int, ...] = ()
    retention: Mapping[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return not (self.ids or self.meta or self.group is not None or self.before or self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The audit record's form: only what was given (a sweep's rows by count)."""
        shown: dict[str, Any] = {}
        if self.ids:
            shown["ids"] = list(self.ids)
        if self.meta:
            shown["meta"] = dict(self.meta)
        if self.group is not None:
            shown["group"] = self.group
        if self.before is not None:
            shown["before"] = iso(self.before)
        if self.retention is not None:
            shown["retention"] = dict(self.retention)
        if self.rows:
            shown["rows"] = len(self.rows)
        return shown


def parse_before(text: str | None) -> datetime | None:
    """A ``--before`` time: ISO 8601 (a date is its midnight; no zone means UTC)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(BAD_BEFORE.format(text=text)) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_meta(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` items (the CLI's ``--meta``)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(BAD_META.format(item=item))
        pairs[key.strip()] = value
    return pairs


def criteria_of(
    *,
    ids: Iterable[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    group: str | None = None,
    before: str | datetime | None = None,
) -> Criteria:
    """Operator criteria, checked: at least one, and a readable time."""
    when = parse_before(before) if isinstance(before, str) else before
    criteria = Criteria(
        ids=tuple(str(i) for i in ids or ()),
        meta=tuple(sorted((meta or {}).items())),
        group=group,
        before=when,
    )
    if criteria.empty:
        raise InvalidRequest(NO_CRITERIA)
    return criteria


@dataclass(frozen=True)
class DeletionResult:
    """What a deletion did. ``to_dict`` is the CLI's ``--json`` answer and the API's."""

    stream: str
    deleted: int
    versions_trained_on_them: list[int]
    audit_id: int
    purged_versions: list[int] = field(default_factory=list)
    kept: dict[str, Any] | None = None
    traffic: int = 0  # traffic rows (predicted images) deleted with them

    def to_dict(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "versions_trained_on_them": self.versions_trained_on_them,
            "audit_id": self.audit_id,
        }


@dataclass(frozen=True)
class _Selected:
    """The samples chosen: database ids, sample ids, and the windows of those that trained
    (held-out samples are never trained on, by version 1 or any update)."""

    rows: list[int]
    sample_ids: set[str]
    window_ids: set[int]
    pictures: set[str]  # their content digests: predictions sent without an id are named so


def _as_text(value: Any) -> str:
    """A meta value as the CLI types it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _select(session: Session, stream_id: int, criteria: Criteria) -> _Selected:
    """The stream's samples meeting every criterion."""
    base = select(
        Sample.id,
        Sample.sample_id,
        Sample.window_id,
        Sample.split,
        Sample.meta,
        Sample.content_digest,
    ).where(Sample.stream_id == stream_id)
    if criteria.group is not None:
        base = base.where(Sample.group == criteria.group)
    if criteria.before is not None:
        base = base.where(Sample.received_at < criteria.before)
    rows: list[Any]
    if criteria.ids:
        rows = [
            r
            for chunk in chunks(list(criteria.ids))
            for r in session.execute(base.where(Sample.sample_id.in_(chunk))).all()
        ]
        if criteria.rows:
            chosen = set(criteria.rows)
            rows = [r for r in rows if r.id in chosen]
    elif criteria.rows:
        rows = [
            r
            for chunk in chunks(list(criteria.rows))
            for r in session.execute(base.where(Sample.id.in_(chunk))).all()
        ]
    else:
        rows = list(session.execute(base).all())
    if criteria.meta:
        wanted = {key: _as_text(value) for key, value in criteria.meta}
        rows = [
            r
            for r in rows
            if isinstance(r.meta, dict)
            and all(key in r.meta and _as_text(r.meta[key]) == v for key, v in wanted.items())
        ]
    return _Selected(
        rows=sorted({int(r.id) for r in rows}),
        sample_ids={str(r.sample_id) for r in rows},
        window_ids={int(r.window_id) for r in rows if r.split == "train"},
        pictures={str(r.content_digest) for r in rows if r.content_digest is not None},
    )


@dataclass(frozen=True)
class Lineage:
    """Versions trained on the samples, and those whose stored state holds some of them."""

    trained: list[int]
    holders: list[int]


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest


def lineage(
    session: Session, service: Service, stream: Stream, sample_ids: set[str], window_ids: set[int]
) -> Lineage:
    """Versions of ``stream`` trained on any of the samples: their windows or an ancestor's
    hold one (a version starts from its parent's weights), or their strategy state's
    buffer does (``buffer_ids`` in the manifest)."""
    rows = session.execute(
        select(ModelVersion.version, ModelVersion.parent, ModelVersion.window_ids).where(
            ModelVersion.stream_id == stream.id
        )
    ).all()
    parent_of = {int(r.version): r.parent for r in rows}
    direct = {int(r.version): bool(window_ids & {int(w) for w in r.window_ids or []}) for r in rows}
    memo: dict[int, bool] = {}

    def saw(version: int) -> bool:
        chain: list[int] = []
        current: int | None = version
        while current is not None and current not in memo and current not in chain:
            chain.append(current)
            if direct.get(current):
                break
            current = parent_of.get(current)
        if chain and direct.get(chain[-1]):
            answer = True
        else:
            answer = memo.get(current, False) if current is not None else False
        for v in chain:
            memo[v] = answer
        return memo[version]

    holders = []
    for version in sorted(parent_of):
        manifest = _manifest(service.registry.folder(stream.name, version))
        held = (manifest or {}).get("state", {}).get("buffer_ids", [])
        if sample_ids & {str(i) for i in held}:
            holders.append(version)
    trained = sorted({v for v in parent_of if saw(v)} | set(holders))
    return Lineage(trained, holders)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_holders(session: Session, service: Service, stream: Stream, holders: list[int]) -> None:
    """Refuse before anything changes when a state to rewrite does not match its digests:
    rewriting it would give a changed file a valid digest."""
    stored: dict[int, Any] = dict(
        session.execute(
            select(ModelVersion.version, ModelVersion.digests).where(
                ModelVersion.stream_id == stream.id, ModelVersion.version.in_(holders)
            )
        )
        .tuples()
        .all()
    )
    for version in holders:
        folder = service.registry.folder(stream.name, version)
        manifest = _manifest(folder) or {}
        digests = manifest.get("digests", {})
        if digests != stored.get(version):
            what = "its manifest does not match the digests the store recorded"
        elif _sha256(folder / "state.safetensors") != digests.get("state.safetensors"):
            what = "state.safetensors does not match its digest"
        else:
            continue
        raise DeletionRefused(FILES_CHANGED.format(version=version, stream=stream.name, what=what))


def _purge_states(
    service: Service, stream: str, holders: list[int], sample_ids: set[str], audit_id: int
) -> dict[int, dict[str, str]]:
    """Rewrite each holder's state without the samples; the new digests by version."""
    # torch comes in with these: imported here, so every `learnstream` command does not pay it.
    from learners.memory_purge import purge_samples
    from learners.strategy_state import load_state

    digests = {}
    for version in holders:
        folder = service.registry.folder(stream, version)
        manifest = _manifest(folder) or {}
        state = load_state(folder / "state.safetensors", manifest["state"], manifest["strategy"])
        purged = purge_samples(state, sample_ids)
        if not purged.removed:
            continue
        note = {"deletion": audit_id, "removed": purged.removed, "at": iso(utcnow())}
        digests[version] = service.registry.rewrite_state(stream, version, purged.state, note)
    return digests


def delete_samples(
    service: Service,
    stream: str,
    criteria: Criteria,
    *,
    by: str,
    reason: str,
    retrain: bool = False,
    kept: Mapping[str, Any] | None = None,
) -> DeletionResult:
    """Delete the samples of ``stream`` that meet ``criteria``, with their lineage (see the
    module's docstring); ``kept``: what a retention sweep had to keep, for the record. A
    deletion that matches nothing deletes nothing and is recorded all the same."""
    by, reason = (by or "").strip(), (reason or "").strip()
    if not by:
        raise InvalidRequest(NO_BY)
    if not reason:
        raise InvalidRequest(NO_REASON)
    if len(by) > BY_LENGTH:
        raise InvalidRequest(TOO_LONG.format(name="--by", limit=BY_LENGTH))
    if criteria.empty:
        raise InvalidRequest(NO_CRITERIA)
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        selected = _select(session, record.id, criteria)
        found = (
            lineage(session, service, record, selected.sample_ids, selected.window_ids)
            if selected.rows
            else Lineage([], [])
        )
        _check_holders(session, service, record, found.holders)
        audit = Deletion(
            stream_id=record.id,
            by=by,
            reason=reason,
            criteria=criteria.to_dict(),
            deleted=0,
            versions=found.trained,
            purged_versions=[],
            kept=dict(kept) if kept else None,
            retrain=retrain,
            status="running",
        )
        session.add(audit)
        session.flush()
        audit_id = audit.id
    digests = _purge_states(service, stream, found.holders, selected.sample_ids, audit_id)
    with service.store.session() as session:
        removed = delete_sample_rows(session, record.id, selected.rows)
        deleted = removed.count
        traffic = 0
        if not criteria.rows:  # an operator's deletion: a person's predicted images go too
            named = selected.sample_ids | set(criteria.ids) | selected.pictures
            traffic = delete_traffic_rows(session, record.id, named) if named else 0
        for row in session.scalars(
            select(ModelVersion).where(
                ModelVersion.stream_id == record.id, ModelVersion.version.in_(found.trained)
            )
        ):
            row.trained_on_deleted = [*(row.trained_on_deleted or []), audit_id]
            if row.version in digests:
                row.digests = digests[row.version]
        audit_row = session.get(Deletion, audit_id)
        assert audit_row is not None  # committed above
        audit_row.deleted = deleted
        audit_row.purged_versions = sorted(digests)
        audit_row.status = "done"
        audit_row.finished_at = utcnow()
    _discard_images(service, record.id, removed.orphaned_images)
    result = DeletionResult(
        stream,
        deleted,
        found.trained,
        audit_id,
        sorted(digests),
        dict(kept) if kept else None,
        traffic,
    )
    log.info(
        "samples deleted",
        extra={
            "stream": stream,
            "deleted": deleted,
            "traffic_deleted": traffic,
            "versions": found.trained,
            "purged_versions": sorted(digests),
            "audit_id": audit_id,
            "by": by,
        },
    )
    return result


def _discard_images(service: Service, stream_id: int, digests: set[str]) -> None:
    """Remove image-store files no sample names, under the stream's lock: ingest stores a
    picture's file and its row under that lock, so a picture sent again meanwhile keeps it."""
    if not digests:
        return
    with service.store.session() as session:
        lock_stream(session, stream_id)
        named = set(
            session.scalars(
                select(Sample.content_digest).where(
                    Sample.stream_id == stream_id, Sample.content_digest.in_(sorted(digests))
                )
            )
        )
        service.store.images.discard(digests - {str(d) for d in named})


def deletion_dict(row: Deletion, stream: str) -> dict[str, Any]:
    """One audit record as the listings show it."""
    return {
        "id": row.id,
        "stream": stream,
        "by": row.by,
        "reason": row.reason,
        "criteria": row.criteria,
        "deleted": row.deleted,
        "versions": row.versions,
        "purged_versions": row.purged_versions,
        "kept": row.kept,
        "retrain": row.retrain,
        "status": row.status,
        "created_at": iso(row.created_at),
        "finished_at": iso(row.finished_at),
    }


def list_deletions(service: Service, stream: str) -> list[dict[str, Any]]:
    """The deletions of ``stream``, newest first."""
    with service.store.session() as session:
        record = service.store.stream(session, stream)
        rows = session.scalars(
            select(Deletion).where(Deletion.stream_id == record.id).order_by(Deletion.id.desc())
        )
        return [deletion_dict(row, stream) for row in rows]
