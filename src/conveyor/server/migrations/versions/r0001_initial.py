"""Initial schema: pools, deployments and their versions, runs and attempts, logs, workers, secrets.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from conveyor.server.tables import JSONType, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pools = op.create_table(
        "pools",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("flow_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("entrypoint", sa.Text(), nullable=False),
        sa.Column("source", JSONType, nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("follow_ref", sa.Boolean(), nullable=False),
        sa.Column("pull_steps", JSONType, nullable=False),
        sa.Column("parameters", JSONType, nullable=False),
        sa.Column("parameter_schema", JSONType, nullable=False),
        sa.Column("work_pool", sa.String(64), sa.ForeignKey("pools.name"), nullable=False),
        sa.Column("job_variables", JSONType, nullable=False),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay_seconds", sa.Double(), nullable=False),
        sa.Column("timeout_seconds", sa.Double(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("flow_name", "name", name="uq_deployments_flow_name"),
    )
    op.create_table(
        "deployment_versions",
        sa.Column(
            "deployment_id",
            sa.String(36),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("revision", sa.Integer(), primary_key=True),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("entrypoint", sa.Text(), nullable=False),
        sa.Column("source", JSONType, nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("deployment_id", sa.String(36), sa.ForeignKey("deployments.id"), nullable=False),
        sa.Column("deployment_revision", sa.Integer(), nullable=False),
        sa.Column("flow_name", sa.String(200), nullable=False),
        sa.Column("deployment_name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("parameters", JSONType, nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("source", JSONType, nullable=False),
        sa.Column("entrypoint", sa.Text(), nullable=False),
        sa.Column("work_pool", sa.String(64), nullable=False),
        sa.Column("pull_steps", JSONType, nullable=False),
        sa.Column("job_variables", JSONType, nullable=False),
        sa.Column("labels", JSONType, nullable=False),
        sa.Column("follow_ref", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay_seconds", sa.Double(), nullable=False),
        sa.Column("timeout_seconds", sa.Double(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("scheduled_at", UTCDateTime(), nullable=True),
        sa.Column("pending_at", UTCDateTime(), nullable=True),
        sa.Column("running_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
        sa.Column("timings", JSONType, nullable=False),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("result_ref", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log_seq", sa.Integer(), nullable=False),
    )
    op.create_index("ix_runs_claim", "runs", ["work_pool", "state", "scheduled_at"])
    op.create_index("ix_runs_lease", "runs", ["state", "lease_expires"])
    op.create_index("ix_runs_deployment", "runs", ["deployment_id", "created"])
    op.create_index("ix_runs_created", "runs", ["created"])
    op.create_table(
        "run_attempts",
        sa.Column(
            "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("pending_at", UTCDateTime(), nullable=True),
        sa.Column("running_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.Column("timings", JSONType, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "logs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "seq", name="uq_logs_run_seq"),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("labels", JSONType, nullable=False),
        sa.Column("limit", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
    )
    # The pool every deployment uses unless told otherwise exists out of the box.
    op.bulk_insert(
        pools,
        [
            {
                "name": "default",
                "type": "process",
                "description": "runs flows in child processes of the worker",
                "created": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    for table in (
        "secrets",
        "workers",
        "logs",
        "run_attempts",
        "runs",
        "deployment_versions",
        "deployments",
        "pools",
    ):
        op.drop_table(table)
