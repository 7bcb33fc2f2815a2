"""Workers: ``workers.stopped``, set by a worker's last heartbeat (it stopped: burst done, Ctrl-C),
so that it shows ``offline`` at once instead of when its heartbeats age out.

Rows from before this revision are not stopped: they go offline by age, as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(
            sa.Column("stopped", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("stopped")
