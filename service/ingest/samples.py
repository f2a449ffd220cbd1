"""Ingest: validate a call's samples, persist the good ones idempotently, fill windows.

A sample counts as accepted only once its transaction commits. Each bad sample
is rejected with a reason naming the field, at its index, while the good
samples of the same call are still accepted (:mod:`service.ingest.rejections`
records them). Window assignment happens under the stream's row lock, so
concurrent ingest workers never split or double-close a window
(:mod:`service.ingest.windows`).

A sample is named by its id and, whatever its id, by its *content digest*: sha256 of the
stream's name and its stored pixels (decoded, channel-converted and resized), so lossless
re-encodings of one picture share it. The digest chooses the train/holdout side, so one
picture never lands on both; a picture already stored (or accepted earlier in the same
call) is a duplicate under the same label and a *conflict* under another: not stored,
answered in ``conflicts`` and recorded as a rejection of its label.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.errors import InvalidRequest, InvalidSample, StreamNotFound
from service.ingest.images import convert_channels, decode, resize_each
from service.ingest.rejections import record_rejections, record_unreadable_call
from service.ingest.windows import close, open_window
from service.store.bulk import any_of, insert_samples
from service.store.engine import Store
from service.store.schema import (
    STREAM_NAME_RULE,
    Sample,
    Stream,
    Window,
    utcnow,
    valid_stream_name,
)
from service.store.streams import StreamGone, lock_kept_stream
from service.streams.catalog import insert_stream
from service.streams.configuration import settings_for
from service.traffic.join import Labelled, join_labels

log = logging.getLogger(__name__)

SAMPLE_FIELDS = frozenset({"image", "label", "group", "id", "meta"})


@dataclass
class PreparedSample:
    """A validated sample, converted to the stream's input shape, ready to insert."""

    index: int
    sample_id: str
    label: int
    group: str
    meta: dict[str, Any] | None
    image_digest: str
    image: torch.Tensor  # channels converted; resized with the call's other images
    pixels: bytes = b""  # set once resized (with ``content_digest`` and ``split``)
    content_digest: str = ""
    split: str = ""


@dataclass(frozen=True)
class StreamLookup:
    """A stream row, and whether this very lookup created it."""

    stream: Stream
    created: bool


def stream_settings(stream: Stream) -> dict[str, Any]:
    """What a stream was created with, as the ingest answer's ``created`` reports it."""
    return {
        "stream": stream.name,
        "classes": list(stream.classes),
        "channels": stream.channels,
        "size": stream.size,
    }


@dataclass
class IngestResult:
    """What one ingest call did; ``to_dict`` is the public contract."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Pictures already stored under another label: {index, id, stored_id, stored_label, label}
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    closed_windows: list[int] = field(default_factory=list)
    created: dict[str, Any] | None = None  # the stream's settings when this call created it
    joined: int = 0  # traffic rows (earlier predictions) this call's labels were joined to

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "conflicts": self.conflicts,
            "created": self.created,
        }


def content_digest(stream: str, pixels: bytes) -> str:
    """sha256 of the stream's name and a sample's stored pixels (its shape is the stream's)."""
    return hashlib.sha256(stream.encode() + b"\0" + pixels).hexdigest()


def split_for(key: str, holdout_fraction: float) -> str:
    """``holdout`` or ``train`` by the hash of ``key`` (a content digest): the same picture,
    redelivered or sent under another id, always lands on the same side."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "holdout" if bucket < holdout_fraction else "train"


def conflict_reason(conflict: dict[str, Any]) -> str:
    """The rejection recorded for a conflict; its detail (in parentheses) names the sample.

    >>> conflict_reason({"stored_id": "a-1", "stored_label": "7"})
    "label: conflicts with a stored sample of the same image (sample 'a-1' labelled '7')"
    """
    return (
        "label: conflicts with a stored sample of the same image "
        f"(sample {quoted(conflict['stored_id'])} labelled {quoted(conflict['stored_label'])})"
    )


def classes_are_indices(classes: list[str]) -> bool:
    """Whether the class names are the integers ``"0"``, ``"1"``, ... in order (the digits)."""
    return classes == [str(i) for i in range(len(classes))]


def quoted(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a reason quotes a caller's text briefly."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(value: int) -> str:
    # str() of an int of over 4300 digits raises: Python's guard against slow conversions.
    return str(value) if abs(value) < 10**18 else "a very large integer"


def resolve_label(label: Any, classes: list[str]) -> int:
    """Class index of ``label``: one of the class names, or an int where the names are the
    integers themselves (``"0"``..``"9"``), since an index into names is an easy mistake."""
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise InvalidSample(f"label: must be an int or a class name, got {type(label).__name__}")
    if isinstance(label, int):
        if not classes_are_indices(classes):
            raise InvalidSample(
                f"label: {_integer(label)} is an integer, but the stream's classes are names "
                f"{classes}: send the class name"
            )
        if not 0 <= label < len(classes):
            raise InvalidSample(
                f"label: {_integer(label)} is outside the stream's {len(classes)} classes"
            )
        return label
    if label not in classes:
        raise InvalidSample(f"label: {quoted(label)} is not one of the stream's classes {classes}")
    return classes.index(label)


def _decode_base64(value: Any, max_bytes: int) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidSample("image: must be a non-empty base64 string")
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise InvalidSample(f"image: more than {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSample("image: not valid base64") from exc
    if len(data) > max_bytes:
        raise InvalidSample(f"image: more than {max_bytes} bytes")
    return data


def check_text(name: str, value: Any, max_length: int) -> str:
    """``value`` as a caller's text field (an id, a group): a non-empty string of at most
    ``max_length`` characters that a database can store; raises :class:`InvalidSample`."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidSample(f"{name}: must be a non-empty string")
    if len(value) > max_length:
        raise InvalidSample(f"{name}: longer than {max_length} characters")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse the sample, not the call
        raise InvalidSample(f"{name}: contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as exc:  # JSON's "\ud800" decodes to text no database stores
        raise InvalidSample(f"{name}: is not valid Unicode (a lone surrogate)") from exc
    return value


def _check_meta(meta: Any, max_bytes: int) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise InvalidSample("meta: must be a JSON object")
    try:
        # As stored: PostgreSQL's json refuses NaN and Infinity, which Python's json writes.
        encoded = json.dumps(meta, allow_nan=False)
    except ValueError as exc:
        raise InvalidSample("meta: holds NaN or an infinite number") from exc
    except (TypeError, RecursionError) as exc:  # only a Python caller can send these
        raise InvalidSample("meta: is not plain JSON") from exc
    if len(encoded) > max_bytes:
        raise InvalidSample(f"meta: more than {max_bytes} bytes of JSON")
    if "\\u0000" in encoded:
        raise InvalidSample("meta: contains a NUL character")
    return meta


def prepare_sample(
    raw: Any, index: int, stream: str, classes: list[str], channels: int, s: Settings
) -> PreparedSample:
    """Validate one raw sample and convert its image's channels; raises :class:`InvalidSample`.

    Resizing waits for the call's other samples (:func:`service.ingest.images.resize_each`)."""
    if not isinstance(raw, dict):
        raise InvalidSample(f"sample: must be an object, got {type(raw).__name__}")
    unknown = sorted(str(key) for key in set(raw) - SAMPLE_FIELDS)
    if unknown:
        raise InvalidSample(f"sample: unknown field {quoted(unknown[0])}")
    for required in ("image", "label", "group"):
        if required not in raw:
            raise InvalidSample(f"{required}: missing")
    data = _decode_base64(raw["image"], s.max_image_bytes)
    image = convert_channels(decode(data, max_pixels=s.max_image_pixels), channels)
    label = resolve_label(raw["label"], classes)
    group = check_text("group", raw["group"], s.max_group_length)
    meta = raw.get("meta")
    if meta is not None:
        meta = _check_meta(meta, s.max_meta_bytes)
    digest = hashlib.sha256(data).hexdigest()
    sample_id = raw.get("id")
    if sample_id is None:
        key = f"{stream}\0{digest}\0{label}\0{group}".encode()
        sample_id = hashlib.sha256(key).hexdigest()
    else:
        sample_id = check_text("id", sample_id, s.max_id_length)
    return PreparedSample(
        index=index,
        sample_id=sample_id,
        label=label,
        group=group,
        meta=meta,
        image_digest=digest,
        image=image,
    )


def get_or_create_stream(store: Store, name: str, settings: Settings) -> StreamLookup:
    """The stream called ``name``, created with the default settings where allowed; the
    answer says whether this call created it (not when a concurrent worker did first)."""
    if not valid_stream_name(name):
        raise InvalidRequest(f"stream: must be {STREAM_NAME_RULE}, got {name!r:.140}")
    cached = store.streams.get(name)
    if cached is not None:
        return StreamLookup(cached, created=False)
    with store.session() as session:
        stream = session.scalar(select(Stream).where(Stream.name == name))
    if stream is None and not settings.auto_create_streams:
        raise StreamNotFound(f"unknown stream {name!r} (auto_create_streams is off)")
    created = False
    if stream is None:
        stream, created = _create_stream(store, name, settings)
    store.streams[name] = stream
    return StreamLookup(stream, created)


def _create_stream(store: Store, name: str, settings: Settings) -> tuple[Stream, bool]:
    stream, created = insert_stream(
        store,
        name,
        list(settings.default_classes),
        settings.input_channels,
        settings.input_size,
        config=None,
    )
    if created:
        log.info("stream created: %s", stream_settings(stream), extra={"stream": name})
    return stream, created


@dataclass
class _Known:
    """What a call's samples match: ids, and each picture's holders (id, label) in order."""

    ids: set[str]
    holders: dict[str, list[tuple[str, int]]]


def _known(session: Session, stream_id: int, prepared: list[PreparedSample]) -> _Known:
    """The stored samples that share an id or a picture with ``prepared`` (one query)."""
    ids = [p.sample_id for p in prepared]
    digests = list({p.content_digest for p in prepared})
    rows = session.execute(
        select(Sample.sample_id, Sample.content_digest, Sample.label)
        .where(
            Sample.stream_id == stream_id,
            or_(
                any_of(session, Sample.sample_id, ids),
                any_of(session, Sample.content_digest, digests),
            ),
        )
        .order_by(Sample.seq)
    ).all()
    wanted = set(ids)
    known = _Known(ids={r.sample_id for r in rows if r.sample_id in wanted}, holders={})
    for r in rows:
        if r.content_digest is not None:
            known.holders.setdefault(r.content_digest, []).append((r.sample_id, r.label))
    return known


def _conflict(
    p: PreparedSample, holders: list[tuple[str, int]], classes: list[str]
) -> dict[str, Any]:
    """The answer's entry for ``p``, whose picture ``holders[0]`` (the first stored) holds."""
    stored_id, stored_label = holders[0]
    return {
        "index": p.index,
        "id": p.sample_id,
        "stored_id": stored_id,
        "stored_label": classes[stored_label] if 0 <= stored_label < len(classes) else "?",
        "label": classes[p.label],
    }


def commit_samples(
    store: Store, stream: Stream, prepared: list[PreparedSample], settings: Settings
) -> IngestResult:
    """Insert new samples in one transaction, assigning windows in arrival order; raises
    :class:`StreamGone` when ``stream`` (a cached row) was deleted or recreated since.

    A known id is a duplicate; a new id showing a known picture is a duplicate when one of
    its holders has the same label, else a conflict (not stored)."""
    result = IngestResult()
    stream_id = stream.id
    classes = [str(c) for c in stream.classes]
    with store.session() as session:
        last_seq = lock_kept_stream(session, stream)
        known = _known(session, stream_id, prepared) if prepared else _Known(set(), {})
        next_seq = last_seq + 1
        window: Window | None = None
        rows, stored = [], []
        now = utcnow()
        for p in prepared:
            if p.sample_id in known.ids:
                result.duplicates.append(p.sample_id)
                continue
            holders = known.holders.get(p.content_digest)
            if holders:
                if any(label == p.label for _, label in holders):
                    result.duplicates.append(p.sample_id)
                else:
                    result.conflicts.append(_conflict(p, holders, classes))
                continue
            known.ids.add(p.sample_id)
            known.holders[p.content_digest] = [(p.sample_id, p.label)]
            window = window or open_window(session, stream_id, settings, result.closed_windows)
            rows.append(
                {
                    "stream_id": stream_id,
                    "sample_id": p.sample_id,
                    "seq": next_seq,
                    "label": p.label,
                    "group": p.group,
                    "split": p.split,
                    "window_id": window.id,
                    "received_at": now,
                    "meta": p.meta,
                    "image_digest": p.image_digest,
                    "content_digest": p.content_digest,
                    "pixels": p.pixels if store.images.in_rows else None,
                }
            )
            stored.append(p)
            next_seq += 1
            window.size += 1
            result.accepted.append(p.sample_id)
            if window.size >= settings.window_size:
                close(window, result.closed_windows)
                session.flush()
                window = None
        if rows:
            # A folder store has the files on disk (fsynced) before the rows commit.
            store.images.put({p.content_digest: p.pixels for p in stored})
            insert_samples(session, rows)
            # A label for an earlier prediction: joined to what was served, in this transaction.
            result.joined = join_labels(
                session,
                stream_id,
                (Labelled(p.sample_id, p.content_digest, p.label, p.group) for p in stored),
            )
            session.execute(
                update(Stream)
                .where(Stream.id == stream_id)
                .values(sample_count=Stream.sample_count + len(rows))
            )
    return result


def _prepare_or_reject(
    raw: Any, index: int, stream: Stream, settings: Settings
) -> PreparedSample | str:
    """The prepared sample, or the reason to reject it: whatever goes wrong with one sample
    rejects that sample only; an error nobody foresaw is logged for operators."""
    try:
        return prepare_sample(raw, index, stream.name, stream.classes, stream.channels, settings)
    except InvalidSample as exc:
        return str(exc)
    except Exception:
        log.warning(
            "ingest: sample %d could not be read",
            index,
            exc_info=True,
            extra={"stream": stream.name},
        )
        return "sample: cannot be read"


def _finish(
    prepared: list[PreparedSample],
    stream: Stream,
    settings: Settings,
    rejected: list[dict[str, Any]],
) -> list[PreparedSample]:
    """The samples whose images could be resized, with their pixels, content digest and
    split set; the others rejected."""
    kept = []
    for sample, image in zip(
        prepared, resize_each([p.image for p in prepared], stream.size), strict=True
    ):
        if image is None:
            rejected.append({"index": sample.index, "reason": "image: cannot be resized"})
            continue
        sample.pixels = image.numpy().tobytes()
        sample.content_digest = content_digest(stream.name, sample.pixels)
        sample.split = split_for(sample.content_digest, settings.holdout_fraction)
        kept.append(sample)
    rejected.sort(key=lambda r: r["index"])
    return kept


def _ingest_once(store: Store, settings: Settings, name: str, samples: list[Any]) -> IngestResult:
    lookup = get_or_create_stream(store, name, settings)
    record = lookup.stream
    settings = settings_for(settings, record)
    prepared: list[PreparedSample] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(samples):
        outcome = _prepare_or_reject(raw, index, record, settings)
        if isinstance(outcome, str):
            rejected.append({"index": index, "reason": outcome})
        else:
            prepared.append(outcome)
    prepared = _finish(prepared, record, settings, rejected)
    result = commit_samples(store, record, prepared, settings)
    result.rejected = rejected
    result.created = stream_settings(record) if lookup.created else None
    refused = rejected + [
        {"index": c["index"], "reason": conflict_reason(c)} for c in result.conflicts
    ]
    record_rejections(store, name, record.id, sorted(refused, key=lambda r: r["index"]))
    if refused:
        log.warning(
            "ingest rejected samples",
            extra={
                "stream": name,
                "rejected": len(rejected),
                "conflicts": len(result.conflicts),
                "accepted": len(result.accepted),
            },
        )
    return result


def ingest(store: Store, settings: Settings, stream: Any, samples: Any) -> IngestResult:
    """Validate, persist and window one call of samples (the ``learnstream.ingest`` contract).

    A stream this process cached that was deleted (or recreated) since is read again, and
    the call is made once more against the stream that lives now."""
    if not isinstance(samples, list):
        raise InvalidRequest(f"samples: must be a list, got {type(samples).__name__}")
    if len(samples) > settings.max_samples_per_call:
        raise InvalidRequest(
            f"samples: {len(samples)} exceed the limit of {settings.max_samples_per_call} per call"
        )
    try:
        return _ingest_once(store, settings, stream, samples)
    except StreamGone:
        log.info("stream changed since it was cached; reading it again", extra={"stream": stream})
        store.streams.pop(stream, None)
        return _ingest_once(store, settings, stream, samples)


def ingest_call(
    store: Store, settings: Settings, stream: Any, samples: Any, unknown: Iterable[str] = ()
) -> IngestResult:
    """One ingest call as a front received it (``POST /v1/samples``, ``learnstream.ingest``):
    :func:`ingest`, where a call that cannot be read (``unknown`` arguments, no ``samples``,
    wrong types) is recorded before :class:`InvalidRequest` goes on to the caller."""
    try:
        if unknown:
            raise InvalidRequest(f"unknown argument(s): {', '.join(sorted(unknown))}")
        if samples is None:
            raise InvalidRequest("samples: missing")
        return ingest(store, settings, stream, samples)
    except InvalidRequest as exc:
        record_unreadable_call(store, stream, str(exc))
        raise
