"""Runs: the SHA-256 and size of a stored result, checked before it is unpickled.

- ``runs.result_sha256``: SHA-256 (hex) of the bytes the worker stored at ``result_ref``;
- ``runs.result_size``: their size in bytes.

Both stay NULL for runs stored before this revision: their results are refused unless the
reader trusts the store (`conveyor.results`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("result_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("result_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in ("result_size", "result_sha256"):
            batch.drop_column(column)
