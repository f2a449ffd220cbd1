"""Samples carry a digest of their content (stream name and stored pixels), indexed per
stream, so ingest splits by content and finds the same picture under another id; pixels may
live in a folder image store (the column is NULL then).

Existing rows get their digest here, in batches of ``BATCH`` rows, from the pixels they
hold (every row before this revision holds its pixels): a new sample showing an old
picture is then a duplicate or a conflict like any other. Their split is left as it was
(by id): moving a stored sample between train and holdout would change what earlier gates
and references saw.

Revision ID: 0005
Revises: 0004
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 1000


def _digest(stream: str, pixels: bytes) -> str:
    # The formula of service.ingest.samples.content_digest, frozen here with the migration.
    return hashlib.sha256(stream.encode() + b"\0" + bytes(pixels)).hexdigest()


def _backfill(conn: sa.Connection) -> None:
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT samples.id, streams.name, samples.pixels FROM samples "
                "JOIN streams ON streams.id = samples.stream_id "
                "WHERE samples.id > :last ORDER BY samples.id LIMIT :batch"
            ),
            {"last": last, "batch": BATCH},
        ).all()
        if not rows:
            return
        conn.execute(
            sa.text("UPDATE samples SET content_digest = :digest WHERE id = :id"),
            [{"id": r.id, "digest": _digest(r.name, r.pixels)} for r in rows],
        )
        last = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("content_digest", sa.String(length=64), nullable=True))
        batch.alter_column("pixels", existing_type=sa.LargeBinary(), nullable=True)
    _backfill(op.get_bind())
    op.create_index("ix_samples_content", "samples", ["stream_id", "content_digest"])


def downgrade() -> None:
    op.drop_index("ix_samples_content", table_name="samples")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("content_digest")
        batch.alter_column("pixels", existing_type=sa.LargeBinary(), nullable=False)
