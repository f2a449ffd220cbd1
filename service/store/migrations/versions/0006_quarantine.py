"""Quarantine: samples whose labels the screen found likely wrong, and windows whose candidate
was rejected under concept or label drift, kept out of training, replay, gates and references.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: SQLite's batch mode would copy and drop ``windows``, which the
    # samples' foreign keys forbid while they are enforced.
    for table in ("samples", "windows"):
        op.add_column(
            table,
            sa.Column("quarantined", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sample_row", sa.Integer(), nullable=True),
        sa.Column("window_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("given", sa.Integer(), nullable=True),
        sa.Column("believed", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"]),
        sa.ForeignKeyConstraint(["sample_row"], ["samples.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["window_id"], ["windows.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quarantine_stream_status", "quarantine", ["stream_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_quarantine_stream_status", table_name="quarantine")
    op.drop_table("quarantine")
    for table in ("samples", "windows"):
        op.drop_column(table, "quarantined")  # no table copy (see upgrade)
