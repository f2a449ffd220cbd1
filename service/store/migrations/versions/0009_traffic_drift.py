"""Traffic drift: each traffic window's verdict against the champion's reference.

Two nullable columns on ``traffic_windows`` (``add_column`` needs no table copy on SQLite).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("traffic_windows", sa.Column("tested_at", sa.DateTime(timezone=True)))
    op.add_column("traffic_windows", sa.Column("summary", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("traffic_windows") as batch:
        batch.drop_column("summary")
        batch.drop_column("tested_at")
