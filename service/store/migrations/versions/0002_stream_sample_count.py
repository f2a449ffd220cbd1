"""Streams count their samples (the last ``seq``), so ingest never scans for ``max(seq)``.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("streams") as batch:
        batch.add_column(
            sa.Column("sample_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE streams SET sample_count = "
        "(SELECT COALESCE(MAX(seq), 0) FROM samples WHERE samples.stream_id = streams.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("streams") as batch:
        batch.drop_column("sample_count")
