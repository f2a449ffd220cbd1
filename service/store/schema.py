"""The relational schema of the store (SQLAlchemy 2 declarative tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MAX_INT = 2**31 - 1  # the integer columns' largest value (PostgreSQL ``integer``)
BY_LENGTH = 128  # characters of who decided: a deletion's ``by``, quarantine's ``decided_by``


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the store uses."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None, timespec: str = "auto") -> str | None:
    """``moment`` in ISO 8601 as UTC, or ``None``: how every view shows a stored time."""
    return as_utc(moment).isoformat(timespec=timespec) if moment is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# Stream names become folder names in the model registry: letters, digits, ``.``, ``_``
# and ``-``, not starting with a dot, so no name can reach another stream's folder.
STREAM_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
STREAM_NAME_RULE = "a name of 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'"


def valid_stream_name(name: object) -> bool:
    """Whether ``name`` may name a stream (see ``STREAM_NAME_PATTERN``)."""
    return isinstance(name, str) and re.fullmatch(STREAM_NAME_PATTERN, name) is not None


class Stream(Base):
    __tablename__ = "streams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    classes: Mapped[list[Any]] = mapped_column(JSON)
    channels: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    # The settings this stream sets itself, by name (``service.streams.configuration``);
    # every other setting comes from the global settings. NULL: none.
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # Bumped by every transaction that takes the stream's lock (``store.streams.lock_stream``):
    # its UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) first.
    lock_ticks: Mapped[int] = mapped_column("lock_version", Integer, default=0)
    # Samples accepted so far: the last sample's ``seq``, read and bumped under that lock.
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("stream_id", "sample_id", name="uq_sample_stream_id"),
        Index("ix_samples_window", "window_id", "seq"),
        Index("ix_samples_content", "stream_id", "content_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    sample_id: Mapped[str] = mapped_column(String(160))
    seq: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column("group_name", String(128))
    split: Mapped[str] = mapped_column(String(8))
    window_id: Mapped[int] = mapped_column(ForeignKey("windows.id"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    image_digest: Mapped[str] = mapped_column(String(64))  # sha256 of the bytes sent
    # sha256 of the stream's name and the stored pixels: the same picture, whatever its id,
    # label or encoding, has one digest, which chooses its split and finds it again.
    content_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The pixels at the stream's shape; NULL when they live in a folder image store
    # (``service.store.images``), under ``content_digest``.
    pixels: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Held out of training, replay, the gate and references while a ``Quarantine`` row holds it.
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Window(Base):
    __tablename__ = "windows"
    __table_args__ = (UniqueConstraint("stream_id", "seq", name="uq_window_stream_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")
    size: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The champion that scored (served) this window while it was processed.
    served_by: Mapped[int | None] = mapped_column("champion_version", Integer, nullable=True)
    drifted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Kept out of later gates, references and training while a ``Quarantine`` row holds it.
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("stream_id", "version", name="uq_version_stream"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    version: Mapped[int] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    strategy: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Database ids of the windows trained on (views show their numbers, ``Window.seq``).
    window_ids: Mapped[list[Any]] = mapped_column("windows", JSON)
    digests: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    gate_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Ids of the deletions (``Deletion.id``) of samples this version was trained on (its
    # windows, an ancestor's, or its strategy state's buffer); NULL: none.
    trained_on_deleted: Mapped[list[Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )


class Deletion(Base):
    """One deletion of samples (an operator's, or the retention sweep's): its audit record."""

    __tablename__ = "deletions"
    __table_args__ = (Index("ix_deletions_stream", "stream_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    by: Mapped[str] = mapped_column(String(BY_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    # How the samples were chosen (ids, meta, group, before; or the retention limits).
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    # Versions trained on any of the samples, and the versions whose stored state was purged.
    versions: Mapped[list[Any]] = mapped_column(JSON)
    purged_versions: Mapped[list[Any]] = mapped_column(JSON)
    # What a retention sweep had to keep beyond its limits, and why; NULL for an operator's.
    kept: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    retrain: Mapped[bool] = mapped_column(Boolean, default=False)
    # ``running`` until the samples are gone and the states purged, then ``done``.
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Champion(Base):
    """The champion pointer: one row per stream, changed in one transaction."""

    __tablename__ = "champions"

    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)


class DriftReport(Base):
    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    window_id: Mapped[int] = mapped_column(ForeignKey("windows.id"))
    kind: Mapped[str] = mapped_column(String(16))
    detector: Mapped[str] = mapped_column(String(32))
    statistic: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    is_drift: Mapped[bool] = mapped_column(Boolean)
    per_group: Mapped[dict[str, Any]] = mapped_column(JSON)
    feature_space: Mapped[str] = mapped_column(String(32))
    reference_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_reference: Mapped[int] = mapped_column(Integer)
    n_window: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int | None] = mapped_column(ForeignKey("streams.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(256))
    message: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Rejection(Base):
    """A sample or a whole call that ingest refused, with its reason."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Quarantine(Base):
    """A sample (``kind`` ``sample``: a label the screen found likely wrong) or a whole window
    (``kind`` ``window``: its candidate was rejected under concept or label drift) kept out of
    learning. ``status``: ``held``, ``released`` (back in) or ``confirmed`` (out for good)."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_stream_status", "stream_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    kind: Mapped[str] = mapped_column(String(16))
    sample_row: Mapped[int | None] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), nullable=True
    )
    window_id: Mapped[int] = mapped_column(ForeignKey("windows.id"))
    status: Mapped[str] = mapped_column(String(16), default="held")
    reason: Mapped[str] = mapped_column(Text)
    given: Mapped[int | None] = mapped_column(Integer, nullable=True)
    believed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(BY_LENGTH), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class AlertDelivery(Base):
    """One alert's delivery to one sink (the webhook): claimed by inserting this row, then
    updated after every attempt. ``status``: ``pending`` (being delivered), ``delivered``,
    ``failed`` (all attempts spent or refused by the receiver)."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "sink", name="uq_delivery_alert_sink"),
        Index("ix_alert_deliveries_status", "sink", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    sink: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set when claimed and after each attempt: a pending row left alone for long is re-claimed.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TrafficWindow(Base):
    """A batch of one stream's traffic (predicted images kept, unlabelled), in arrival order;
    ``open`` until ``traffic_window_size`` rows or ``traffic_window_max_age`` close it. Apart
    from ``windows`` so that nothing the learner claims or trains on can be traffic."""

    __tablename__ = "traffic_windows"
    __table_args__ = (
        UniqueConstraint("stream_id", "seq", name="uq_traffic_window_stream_seq"),
        # At most one open traffic window per stream, whatever concurrent predictions do.
        Index(
            "uq_traffic_window_open",
            "stream_id",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")
    size: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Drift: ``closed`` -> ``testing`` (claimed by a learner; ``tested_at`` is the claim's
    # time) -> ``tested`` (``summary`` holds the verdict: service.traffic.drift).
    tested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class Traffic(Base):
    """One predicted image kept as traffic: its pixels at the stream's shape, what the
    champion of the time answered, and, once a labelled sample of the same id (or, for an
    image predicted without an id, the same picture) arrives, its label: the join that
    gives the accuracy of what was served."""

    __tablename__ = "traffic"
    __table_args__ = (
        UniqueConstraint("stream_id", "traffic_id", name="uq_traffic_stream_id"),
        Index("ix_traffic_stream_received", "stream_id", "received_at"),
        Index("ix_traffic_window", "window_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id"))
    # The caller's id of the image, else its content digest.
    traffic_id: Mapped[str] = mapped_column(String(160))
    # The caller's group; for an image sent without one, the labelled sample's once joined.
    group: Mapped[str | None] = mapped_column("group_name", String(128), nullable=True)
    window_id: Mapped[int] = mapped_column(ForeignKey("traffic_windows.id"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    content_digest: Mapped[str] = mapped_column(String(64))
    # The pixels at the stream's shape (uint8), always in the row: traffic is bounded
    # (``traffic_max_rows``) and has its own lifetime, apart from the samples' image store.
    pixels: Mapped[bytes] = mapped_column(LargeBinary)
    predicted: Mapped[int] = mapped_column(Integer)  # class index served
    probability: Mapped[float] = mapped_column(Float)  # its score
    served_version: Mapped[int] = mapped_column(Integer)
    # The join: the labelled sample's class index and when it was stored; NULL until then.
    label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    labelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
