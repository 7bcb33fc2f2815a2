"""Dashboard: cache figures on worker heartbeats; indexes for filtering runs by state and worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("cache_bytes", sa.BigInteger(), nullable=True))
    op.add_column("workers", sa.Column("cache_entries", sa.Integer(), nullable=True))
    op.add_column("workers", sa.Column("cache_hits", sa.BigInteger(), nullable=True))
    op.add_column("workers", sa.Column("cache_misses", sa.BigInteger(), nullable=True))
    # The dashboard's run list filters by state or worker and pages by creation time.
    op.create_index("ix_runs_state_created", "runs", ["state", "created"])
    op.create_index("ix_runs_worker_created", "runs", ["worker", "created"])


def downgrade() -> None:
    op.drop_index("ix_runs_worker_created", table_name="runs")
    op.drop_index("ix_runs_state_created", table_name="runs")
    with op.batch_alter_table("workers") as batch:
        for column in ("cache_misses", "cache_hits", "cache_entries", "cache_bytes"):
            batch.drop_column(column)
