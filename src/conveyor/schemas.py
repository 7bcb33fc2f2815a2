"""The HTTP API's models: what the server accepts and returns, and what `ConveyorClient` speaks.

Pydantic lives here, at the edge; inside the worker and the sources, frozen dataclasses.
No model ever carries a secret value, except `SecretValue`, which only the worker's secret
look-up endpoint returns.

Endpoints (all JSON, under ``/api``; ``X-API-Key`` header when the server has a key):

| method + path | body → response |
|---|---|
| GET  /api/health | → ``{"status": "ok", "version": "..."}`` |
| POST /api/pools | PoolCreate → Pool (201; 409 if it exists) |
| GET  /api/pools | → list[Pool] |
| PUT  /api/deployments | DeploymentCreate → Deployment (create or update, by flow/name) |
| GET  /api/deployments | → list[Deployment] |
| GET  /api/deployments/{flow}/{name} | → Deployment |
| GET  /api/deployments/{flow}/{name}/versions | → list[DeploymentVersion] |
| POST /api/deployments/{flow}/{name}/runs | RunCreate → Run (201; 422 bad parameters) |
| GET  /api/runs?deployment=&state=&pool=&limit= | → list[Run] (newest first) |
| GET  /api/runs/{id} | → Run |
| POST /api/runs/{id}/cancel | → Run |
| POST /api/pools/{pool}/claim | ClaimRequest → Run or 204 (long-poll up to wait_seconds) |
| POST /api/runs/{id}/heartbeat | RunHeartbeat → RunHeartbeatReply (lease extended) |
| POST /api/runs/{id}/state | StateUpdate → Run (409 if the worker lost the lease) |
| POST /api/runs/{id}/logs | list[LogRecord] → 204 |
| GET  /api/runs/{id}/logs?after=&limit= | → list[LogLine] |
| POST /api/workers/heartbeat | WorkerHeartbeat → Worker |
| GET  /api/workers | → list[Worker] |
| PUT  /api/secrets/{name} | SecretPut → SecretInfo |
| GET  /api/secrets | → list[SecretInfo] (never values) |
| GET  /api/secrets/{name}/value | → SecretValue (for workers resolving ``${NAME}``) |
| DELETE /api/secrets/{name} | → 204 |
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ClaimRequest",
    "Deployment",
    "DeploymentCreate",
    "DeploymentVersion",
    "LogLine",
    "LogRecord",
    "Pool",
    "PoolCreate",
    "Run",
    "RunAttempt",
    "RunCreate",
    "RunHeartbeat",
    "RunHeartbeatReply",
    "RunState",
    "SecretInfo",
    "SecretPut",
    "SecretValue",
    "StateUpdate",
    "Worker",
    "WorkerHeartbeat",
]


class RunState(StrEnum):
    """A run's life: scheduled → pending → running → one of the final states."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed, crashed and cancelled."""
        return self in _FINAL


_FINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolCreate(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    type: str = "process"
    description: str = ""


class Pool(_Model):
    name: str
    type: str
    description: str
    created: datetime


class DeploymentCreate(_Model):
    """What `deploy` sends. ``source`` is a secret-free source spec (``{"kind": ...}``)."""

    flow_name: str
    name: str
    entrypoint: str
    source: dict[str, Any]
    version: str
    follow_ref: bool = False
    pull_steps: list[dict[str, Any]] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] = Field(default_factory=dict)
    work_pool: str = "default"
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    retries: int = 0
    retry_delay_seconds: float = 0
    timeout_seconds: float | None = None


class Deployment(DeploymentCreate):
    id: str
    revision: int
    created: datetime
    updated: datetime


class DeploymentVersion(_Model):
    """One revision of a deployment: a new revision is kept whenever version or config changes."""

    revision: int
    version: str
    entrypoint: str
    source: dict[str, Any]
    created: datetime


class RunCreate(_Model):
    parameters: dict[str, Any] = Field(default_factory=dict)
    follow_ref: bool | None = None


class RunAttempt(_Model):
    """How one finished attempt of a run ended (a retry reuses the run with ``attempt + 1``)."""

    attempt: int
    state: RunState
    worker: str | None = None
    version: str
    pending_at: datetime | None = None
    running_at: datetime | None = None
    ended_at: datetime
    timings: dict[str, float] = Field(default_factory=dict)
    error: str | None = None


class Run(_Model):
    id: str
    deployment_id: str
    flow_name: str
    deployment_name: str
    state: RunState
    parameters: dict[str, Any]
    version: str
    """The code version the run uses (pinned at creation; set at fetch when following a ref)."""
    source: dict[str, Any]
    entrypoint: str
    work_pool: str
    pull_steps: list[dict[str, Any]] = Field(default_factory=list)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    follow_ref: bool = False
    worker: str | None = None
    attempt: int = 1
    max_retries: int = 0
    retry_delay_seconds: float = 0
    timeout_seconds: float | None = None
    cancel_requested: bool = False
    created: datetime
    scheduled_at: datetime | None = None
    pending_at: datetime | None = None
    running_at: datetime | None = None
    ended_at: datetime | None = None
    lease_expires: datetime | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase: queue, fetch, start, run."""
    result: Any = None
    result_ref: str | None = None
    error: str | None = None
    labels: list[str] = Field(default_factory=list)
    """Labels a worker must have to claim the run (from ``job_variables["labels"]``)."""
    deployment_revision: int | None = None
    attempts: list[RunAttempt] = Field(default_factory=list)
    """Every finished attempt, oldest first (crashed/failed tries that were retried included)."""


class ClaimRequest(_Model):
    worker: str
    labels: list[str] = Field(default_factory=list)
    lease_seconds: float = 30
    wait_seconds: float = 0


class RunHeartbeat(_Model):
    worker: str
    lease_seconds: float = 30


class RunHeartbeatReply(_Model):
    lease_expires: datetime
    cancel_requested: bool


class StateUpdate(_Model):
    worker: str
    state: RunState
    version: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    result: Any = None
    result_ref: str | None = None
    error: str | None = None


class LogRecord(_Model):
    timestamp: datetime
    level: str = "INFO"
    stream: str = "log"
    message: str


class LogLine(LogRecord):
    seq: int


class WorkerHeartbeat(_Model):
    name: str
    pool: str
    labels: list[str] = Field(default_factory=list)
    limit: int = 1
    running: int = 0
    # The worker's code cache: bytes and checkouts held, hits and misses since the worker started.
    cache_bytes: int | None = None
    cache_entries: int | None = None
    cache_hits: int | None = None
    cache_misses: int | None = None


class Worker(_Model):
    name: str
    pool: str
    labels: list[str]
    limit: int
    running: int
    last_heartbeat: datetime
    status: str
    cache_bytes: int | None = None
    cache_entries: int | None = None
    cache_hits: int | None = None
    cache_misses: int | None = None


class SecretPut(_Model):
    value: str


class SecretInfo(_Model):
    name: str
    created: datetime
    updated: datetime


class SecretValue(_Model):
    name: str
    value: str
