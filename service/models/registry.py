"""The model registry: versions on disk, their rows in the store, and the champion pointer.

``<model_dir>/<stream>/v<NNNN>/`` holds ``model.safetensors``, ``state.safetensors``
and ``manifest.json``. A version is written to a temporary folder and renamed
into place, so a crash never leaves a half-written version visible; what a
learner that died left behind (a temporary folder, an undecided candidate) is
removed when its window is retried. The champion pointer is one row changed in
one transaction; a crash at any point leaves the old champion serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import load_file, save_file
from sqlalchemy import delete, func, select, update

from learners.models import Classifier, build_model
from learners.strategy_state import StrategyState, load_state, save_state
from service.alerts.records import record_event
from service.errors import ModelNotFound
from service.store.engine import Store
from service.store.images import fsync_folder
from service.store.schema import (
    STREAM_NAME_RULE,
    Champion,
    ModelVersion,
    Stream,
    utcnow,
    valid_stream_name,
)
from service.store.streams import champion_version

log = logging.getLogger(__name__)
ChampionEvent = Literal["model.promoted", "model.rolled_back"]


@dataclass
class LoadedVersion:
    """A version read back from disk: the model in eval mode, its strategy state and manifest."""

    version: int
    model: Classifier
    state: StrategyState
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


ANNOUNCE_CHANNEL = "learnstream:champion"
DIGEST_MISMATCH = "{path} does not match its digest"
_VERSION_FOLDER = re.compile(r"v(\d{4,})")


class Registry:
    """Writes, reads and promotes model versions of every stream.

    After a swap commits, it is announced on the Redis channel ``learnstream:champion``
    (when ``announce_url`` is set) so that predict workers can load the new champion
    before their next request; workers still check the pointer in the store on every
    prediction, so a lost announcement costs latency, never correctness.
    """

    def __init__(self, store: Store, model_dir: Path, announce_url: str | None = None) -> None:
        self.store = store
        self.model_dir = model_dir
        self.announce_url = announce_url

    def stream_folder(self, stream: str) -> Path:
        """The folder of a stream's versions; a name that could reach another folder raises."""
        if not valid_stream_name(stream):
            raise ValueError(f"stream name {stream!r} is not {STREAM_NAME_RULE}")
        return self.model_dir / stream

    def folder(self, stream: str, version: int) -> Path:
        return self.stream_folder(stream) / f"v{version:04d}"

    def create_version(
        self,
        stream: Stream,
        model: Classifier,
        state: StrategyState,
        *,
        parent: int | None,
        strategy: str,
        params: dict[str, Any],
        windows: list[int],
        arch: dict[str, Any],
    ) -> int:
        """Write a new version (status ``candidate``) and return its number."""
        with self.store.session() as session:
            last = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.stream_id == stream.id)
            )
        version = (last or 0) + 1
        final = self.folder(stream.name, version)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save_file(
                {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                tmp / "model.safetensors",
            )
            state_meta = save_state(state, tmp / "state.safetensors")
            digests = {
                "model.safetensors": _sha256(tmp / "model.safetensors"),
                "state.safetensors": _sha256(tmp / "state.safetensors"),
            }
            manifest = {
                "stream": stream.name,
                "version": version,
                "parent": parent,
                "arch": arch,
                "classes": list(stream.classes),
                "strategy": strategy,
                "params": params,
                "windows": windows,
                "state": state_meta,
                "digests": digests,
                "created_at": utcnow().isoformat(),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            fsync_folder(tmp)
            if final.exists():  # left by a crash between rename and insert: never registered
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_folder(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with self.store.session() as session:
            session.add(
                ModelVersion(
                    stream_id=stream.id,
                    version=version,
                    parent=parent,
                    strategy=strategy,
                    params=params,
                    window_ids=windows,
                    digests=digests,
                    status="candidate",
                    path=str(final),
                )
            )
        log.info("version written", extra={"stream": stream.name, "version": version})
        return version

    def discard_unfinished(self, stream: Stream, window_id: int) -> list[int]:
        """Remove what a learner that died while processing ``window_id`` left behind.

        Its undecided candidates (status ``candidate``, trained on that window) lose their
        row and folder; temporary folders and version folders without a row (a write cut
        short) go too. Only the stream's learner calls this, while it holds the window's
        claim, so no other writer is at work in the stream's folder. Numbers go on from the
        highest registered version, so the retry reuses a discarded number when it was the
        last. Returns the versions discarded.
        """
        with self.store.session() as session:
            rows = session.execute(
                select(ModelVersion.version, ModelVersion.window_ids).where(
                    ModelVersion.stream_id == stream.id, ModelVersion.status == "candidate"
                )
            ).all()
            orphans = [v for v, windows in rows if window_id in (windows or [])]
            if orphans:
                session.execute(
                    delete(ModelVersion).where(
                        ModelVersion.stream_id == stream.id, ModelVersion.version.in_(orphans)
                    )
                )
            registered = set(
                session.scalars(
                    select(ModelVersion.version).where(ModelVersion.stream_id == stream.id)
                )
            )
        folder = self.stream_folder(stream.name)
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            numbered = _VERSION_FOLDER.fullmatch(path.name)
            if path.name.startswith(".tmp-") or (numbered and int(numbered[1]) not in registered):
                # Renamed first, so a crash halfway through leaves a temporary folder only.
                doomed = folder / f".tmp-discard-{uuid.uuid4().hex}"
                os.rename(path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        if orphans:
            log.warning(
                "discarded undecided versions of a dead learner",
                extra={"stream": stream.name, "versions": orphans, "window_id": window_id},
            )
        return orphans

    def rewrite_state(
        self, stream: str, version: int, state: StrategyState, note: dict[str, Any]
    ) -> dict[str, str]:
        """Replace the strategy state of a written version in place (its weights untouched),
        noting ``note`` in the manifest's ``purged`` list; returns the new file digests.

        Both files are written beside the old ones and renamed over them (state first, then
        the manifest), so a reader sees the old or the new state, never half of one; a
        reader between the two renames finds a digest mismatch, as for a version being
        written. The new manifest is a new file, so a cache keyed by the manifest's identity
        (:meth:`service.context.Service.version`) loads the version again. The caller records
        the new digests in the store."""
        folder = self.folder(stream, version)
        manifest = json.loads((folder / "manifest.json").read_text())
        tag = uuid.uuid4().hex
        new_state = folder / f".tmp-state-{tag}.safetensors"
        new_manifest = folder / f".tmp-manifest-{tag}.json"
        try:
            meta = save_state(state, new_state)
            digests = {**manifest["digests"], "state.safetensors": _sha256(new_state)}
            manifest["state"] = meta
            manifest["digests"] = digests
            manifest["purged"] = [*manifest.get("purged", []), note]
            new_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            for path in (new_state, new_manifest):
                _fsync_file(path)
            os.replace(new_state, folder / "state.safetensors")
            os.replace(new_manifest, folder / "manifest.json")
            fsync_folder(folder)
        finally:
            for path in (new_state, new_manifest):
                path.unlink(missing_ok=True)
        log.info("version state rewritten", extra={"stream": stream, "version": version, **note})
        return digests

    def load(self, stream: str, version: int) -> LoadedVersion:
        """Read a version back, checking its file digests against the manifest."""
        folder = self.folder(stream, version)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise ModelNotFound(f"stream {stream!r} has no version {version} on disk")
        manifest = json.loads(manifest_path.read_text())
        for name, digest in manifest["digests"].items():
            if _sha256(folder / name) != digest:
                raise ModelNotFound(DIGEST_MISMATCH.format(path=folder / name))
        model = build_model(seed=0, **manifest["arch"])
        model.load_state_dict(load_file(folder / "model.safetensors"))
        model.eval()
        state = load_state(folder / "state.safetensors", manifest["state"], manifest["strategy"])
        return LoadedVersion(version, model, state, manifest)

    def set_status(self, stream_id: int, version: int, status: str, report: dict | None) -> None:
        with self.store.session() as session:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.stream_id == stream_id, ModelVersion.version == version)
                .values(status=status, gate_report=report)
            )

    def champion(self, stream_id: int) -> int | None:
        """The champion version of a stream, or ``None`` before the first promotion."""
        with self.store.session() as session:
            return champion_version(session, stream_id)

    def promote(
        self,
        stream_id: int,
        version: int,
        *,
        by: str,
        reason: str,
        report: dict | None = None,
        event: ChampionEvent = "model.promoted",
    ) -> int | None:
        """Make ``version`` the champion in one transaction, recording ``event`` (delivered to
        the webhook after the commit) in it; returns the previous champion."""
        with self.store.session() as session:
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.stream_id == stream_id, ModelVersion.version == version
                )
            )
            if row is None:
                raise ModelNotFound(f"no version {version}")
            pointer = session.get(Champion, stream_id, with_for_update=True)
            previous = pointer.version if pointer else None
            if pointer is None:
                session.add(
                    Champion(stream_id=stream_id, version=version, changed_by=by, reason=reason)
                )
            else:
                pointer.version, pointer.changed_by, pointer.reason = version, by, reason
                pointer.changed_at = utcnow()
            if previous is not None and previous != version:
                session.execute(
                    update(ModelVersion)
                    .where(ModelVersion.stream_id == stream_id, ModelVersion.version == previous)
                    .values(status="retired")
                )
            row.status = "champion"
            if report is not None:
                row.gate_report = report
            stream = session.get(Stream, stream_id)
            assert stream is not None  # the version row's foreign key
            change = {
                "event": event,
                "stream": stream.name,
                "stream_id": stream_id,
                "version": version,
                "previous": previous,
                "digest": (row.digests or {}).get("model.safetensors"),
                "artifact": str(self.folder(stream.name, version) / "model.safetensors"),
                "by": by,
                "reason": reason,
            }
            verb = "promoted" if event == "model.promoted" else "rolled back to"
            was = "the first champion" if previous is None else f"was v{previous}"
            record_event(
                session,
                stream_id=stream_id,
                kind=event,
                subject=f"{stream.name} v{version}",
                message=f"{stream.name}: {verb} v{version} ({was}) by {by}: {reason}",
                payload=change,
            )
        log.info(
            "champion swapped",
            extra={"stream_id": stream_id, "version": version, "previous": previous, "by": by},
        )
        self._announce(change)
        return previous

    def _announce(self, change: dict[str, Any]) -> None:
        if self.announce_url is None:
            return
        import redis

        message = json.dumps(change)
        try:
            client = redis.Redis.from_url(self.announce_url, socket_timeout=2)
            client.publish(ANNOUNCE_CHANNEL, message)
            client.close()
        except redis.RedisError as exc:  # the pointer is committed; workers will still see it
            log.warning("champion swap not announced: %s", exc)
