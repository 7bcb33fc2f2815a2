"""The server's tables (SQLAlchemy 2, typed ORM mappings).

Schema changes go through a migration in ``migrations/versions`` as well; a test checks that the
migrated database and these mappings agree.

| table | one row per |
|---|---|
| ``pools`` | work pool |
| ``deployments`` | deployment (``flow_name/name``), holding its current revision |
| ``deployment_versions`` | kept revision of a deployment |
| ``runs`` | run; a retry reuses the row with ``attempt + 1`` |
| ``run_attempts`` | finished attempt of a run (how each earlier try ended) |
| ``logs`` | log line of a run, numbered by ``seq`` per run |
| ``workers`` | worker, by name, with its last heartbeat |
| ``secrets`` | secret, its value encrypted |
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

__all__ = [
    "Base",
    "DeploymentRow",
    "DeploymentVersionRow",
    "JSONType",
    "LogRow",
    "PoolRow",
    "RunAttemptRow",
    "RunRow",
    "SecretRow",
    "UTCDateTime",
    "WorkerRow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite stores naive UTC text, which sorts)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONValue(TypeDecorator[Any]):
    """JSON; JSONB on PostgreSQL (imported only there, to keep SQLite starts lean)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


JSONType = JSONValue()


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class PoolRow(Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime]
    base_job_template: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("flow_name", "name", name="uq_deployments_flow_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_name: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int]
    entrypoint: Mapped[str] = mapped_column(Text)
    source: Mapped[dict[str, Any]]
    version: Mapped[str] = mapped_column(String(200))
    follow_ref: Mapped[bool]
    pull_steps: Mapped[list[Any]]
    parameters: Mapped[dict[str, Any]]
    parameter_schema: Mapped[dict[str, Any]]
    work_pool: Mapped[str] = mapped_column(String(64), ForeignKey("pools.name"))
    job_variables: Mapped[dict[str, Any]]
    tags: Mapped[list[Any]]
    description: Mapped[str] = mapped_column(Text)
    retries: Mapped[int]
    retry_delay_seconds: Mapped[float]
    timeout_seconds: Mapped[float | None]
    created: Mapped[datetime]
    updated: Mapped[datetime]


class DeploymentVersionRow(Base):
    __tablename__ = "deployment_versions"

    deployment_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(200))
    entrypoint: Mapped[str] = mapped_column(Text)
    source: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    """The whole `DeploymentCreate` of this revision."""
    created: Mapped[datetime]


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_claim", "work_pool", "state", "scheduled_at"),
        Index("ix_runs_lease", "state", "lease_expires"),
        Index("ix_runs_deployment", "deployment_id", "created"),
        Index("ix_runs_created", "created"),
        Index("ix_runs_state_created", "state", "created"),
        Index("ix_runs_worker_created", "worker", "created"),
        Index("ix_runs_claim_id", "claim_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(36), ForeignKey("deployments.id"))
    deployment_revision: Mapped[int]
    flow_name: Mapped[str] = mapped_column(String(200))
    deployment_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    parameters: Mapped[dict[str, Any]]
    version: Mapped[str] = mapped_column(String(200))
    source: Mapped[dict[str, Any]]
    entrypoint: Mapped[str] = mapped_column(Text)
    work_pool: Mapped[str] = mapped_column(String(64))
    pull_steps: Mapped[list[Any]]
    job_variables: Mapped[dict[str, Any]]
    labels: Mapped[list[Any]]
    """Labels a worker must have to claim the run (``job_variables["labels"]``)."""
    follow_ref: Mapped[bool]
    worker: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int]
    max_retries: Mapped[int]
    retry_delay_seconds: Mapped[float]
    timeout_seconds: Mapped[float | None]
    cancel_requested: Mapped[bool]
    created: Mapped[datetime]
    scheduled_at: Mapped[datetime | None]
    pending_at: Mapped[datetime | None]
    running_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    lease_expires: Mapped[datetime | None]
    lease_seconds: Mapped[float | None]
    """How long the holder's lease lasts (claim or last heartbeat): the grace the server gives
    the holder after the server itself was away (`conveyor.server.context`)."""
    claim_id: Mapped[str | None] = mapped_column(String(64))
    """The id of the claim that took the current attempt (a re-presented claim gets it back)."""
    timings: Mapped[dict[str, Any]]
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    result_ref: Mapped[str | None] = mapped_column(Text)
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 (hex) of the bytes stored at ``result_ref`` (NULL: stored before results had one)."""
    result_size: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    log_seq: Mapped[int]
    """The last log ``seq`` handed out for this run."""
    log_batches: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    """``{attempt: last batch number stored}``: a log batch sent again is not stored twice."""


class RunAttemptRow(Base):
    __tablename__ = "run_attempts"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    pending_at: Mapped[datetime | None]
    running_at: Mapped[datetime | None]
    ended_at: Mapped[datetime]
    timings: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    lease_expired: Mapped[bool] = mapped_column(default=False, server_default=false())
    """The server ended this attempt because its lease expired (not a report from the worker):
    the holder's own final report may still replace it (`claims.set_run_state`)."""


class LogRow(Base):
    __tablename__ = "logs"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_logs_run_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int]
    timestamp: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class WorkerRow(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[Any]]
    limit: Mapped[int]
    running: Mapped[int]
    created: Mapped[datetime]
    last_heartbeat: Mapped[datetime]
    cache_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cache_entries: Mapped[int | None]
    cache_hits: Mapped[int | None] = mapped_column(BigInteger)
    cache_misses: Mapped[int | None] = mapped_column(BigInteger)
    stopped: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Its last beat said it stopped: offline whatever the beat's age."""


class SecretRow(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime]
    updated: Mapped[datetime]
