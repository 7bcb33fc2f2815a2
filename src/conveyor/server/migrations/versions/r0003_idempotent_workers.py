"""Idempotent worker requests: claim ids, lease lengths, log batch numbers, expired attempts.

- ``runs.claim_id``: the claim that took the current attempt (a worker re-presents it when the
  reply to its claim was lost, and gets the same run back);
- ``runs.lease_seconds``: the holder's lease length, the grace the server gives it after the
  server (or its database) was away;
- ``runs.log_batches``: ``{attempt: last batch number stored}``, so a batch sent again is not
  stored twice;
- ``run_attempts.lease_expired``: the server ended the attempt because its lease expired (the
  holder's own late final report may still replace it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.server.tables import JSONType

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_attempts") as batch:
        batch.add_column(
            sa.Column("lease_expired", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("claim_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("log_batches", JSONType, nullable=True))
        batch.create_index("ix_runs_claim_id", ["claim_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_claim_id")
        for column in ("log_batches", "claim_id", "lease_seconds"):
            batch.drop_column(column)
    with op.batch_alter_table("run_attempts") as batch:
        batch.drop_column("lease_expired")
