"""Traffic: predicted images kept unlabelled, their windows, and late labels joined to them.

New tables only (``samples`` and ``windows`` stay as they are: other tables reference them,
and SQLite's table copy would break those references).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traffic_windows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("stream_id", sa.Integer(), sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("stream_id", "seq", name="uq_traffic_window_stream_seq"),
    )
    op.create_index(
        "uq_traffic_window_open",
        "traffic_windows",
        ["stream_id"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_table(
        "traffic",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("stream_id", sa.Integer(), sa.ForeignKey("streams.id"), nullable=False),
        sa.Column("traffic_id", sa.String(160), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=True),
        sa.Column("window_id", sa.Integer(), sa.ForeignKey("traffic_windows.id"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("pixels", sa.LargeBinary(), nullable=False),
        sa.Column("predicted", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("served_version", sa.Integer(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("stream_id", "traffic_id", name="uq_traffic_stream_id"),
    )
    op.create_index("ix_traffic_stream_received", "traffic", ["stream_id", "received_at"])
    op.create_index("ix_traffic_window", "traffic", ["window_id"])


def downgrade() -> None:
    op.drop_index("ix_traffic_window", table_name="traffic")
    op.drop_index("ix_traffic_stream_received", table_name="traffic")
    op.drop_table("traffic")
    op.drop_index("uq_traffic_window_open", table_name="traffic_windows")
    op.drop_table("traffic_windows")
