"""The HTTP API's models: what the server accepts and returns, and what `ConveyorClient` speaks.

Pydantic lives here, at the edge; inside the worker and the sources, frozen dataclasses.
No model ever carries a secret value, except `SecretValue`, which only the worker's secret
look-up endpoint returns, and the values of a run's secret parameters (``SecretStr``), which
only the claim answer and `RunParameters` (for the run's holder) carry: everywhere else they
are ``****``.

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
| POST /api/runs/{id}/parameters | RunParametersRequest → RunParameters (its holder; else 409) |
| POST /api/runs/{id}/logs?attempt=&batch= | list[LogRecord] → 204 (a batch stored once) |
| GET  /api/runs/{id}/logs?after=&limit= | → list[LogLine] |
| GET  /api/runs/{id}/watch?after=&state=&wait= | → RunWatch, once there is news (long-poll) |
| POST /api/workers/heartbeat | WorkerHeartbeat → Worker |
| GET  /api/workers | → list[Worker] |
| PUT  /api/secrets/{name} | SecretPut → SecretInfo |
| GET  /api/secrets | → list[SecretInfo] (never values) |
| GET  /api/secrets/{name}/value | → SecretValue (for workers resolving ``${NAME}``) |
| DELETE /api/secrets/{name} | → 204 |

Request bodies are checked here, on both sides of the wire, with the rules of
`conveyor._names` (names, versions, labels) and `conveyor._values` (every string is valid Unicode
without NUL, every number finite, nothing nested deeper than 64 levels), and bounded durations.
A refusal is one pydantic error whose message is the whole sentence and whose ``ctx`` carries the
hint; `describe_errors` turns a list of them into the one line the server answers with (422).
Free text a worker reports (log lines, a run's error) is cleaned instead of refused.

What a worker sends is safe to repeat when a reply is lost (the client retries these POSTs):

- a claim carries a ``claim_id`` the worker makes up and re-presents until it gets an answer:
  the server gives the same run back to the same claim id, never a second run;
- a state report carries the run's ``attempt``: the same (run, attempt, state) again changes
  nothing and answers as the first did; a heartbeat carries it too;
- a log batch is numbered ``batch`` = 1, 2, 3, ... per run attempt (query parameters
  ``attempt`` and ``batch``): a batch the server already stored is ignored.

Each of these fields is optional, so an older worker is served as before (without the guarantee).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from conveyor import _names
from conveyor._values import clean_text, value_problem
from conveyor.errors import ConfigError
from conveyor.settings import DEFAULT_LEASE_SECONDS

__all__ = [
    "CLAIM_ID_PATTERN",
    "DEFAULT_LEASE_SECONDS",
    "MAX_DURATION_SECONDS",
    "MAX_LEASE_SECONDS",
    "MAX_WAIT_SECONDS",
    "MIN_LEASE_SECONDS",
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
    "RunParameters",
    "RunParametersRequest",
    "RunState",
    "RunWatch",
    "SecretInfo",
    "SecretPut",
    "SecretValue",
    "StateUpdate",
    "Worker",
    "WorkerHeartbeat",
    "build_models",
    "describe_errors",
]

MIN_LEASE_SECONDS = 0.1
MAX_LEASE_SECONDS = 86_400.0
"""A lease (claim or heartbeat) lasts at least 0.1 s and at most a day."""
MAX_WAIT_SECONDS = 3_600.0
"""The longest ``wait_seconds`` a claim may ask for (the server waits at most 60 s anyway)."""
MAX_DURATION_SECONDS = 366 * 86_400.0
"""The longest retry delay or timeout: a year."""
_MAX_RETRIES = 1_000
CLAIM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
RESULT_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
"""A stored result's digest: SHA-256 of its bytes, lowercase hex (`conveyor.results`)."""
"""A claim id: 8 to 64 letters, digits, ``_`` or ``-`` (a worker sends a UUID's hex)."""
_ERROR_TYPE = "conveyor_invalid"


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
    # Validators are built on a model's first use, not at import: a command uses two or three
    # of these models, and building all of them was a third of a server-mode CLI start-up.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class _Request(_Model):
    """A request body: refused (a validation error) unless everything in it can be stored.

    `_check` runs the model's own rules (names, versions: `conveyor._names`) first, so a name
    is refused with the sentence the CLI prints; then every field is walked by
    `conveyor._values.value_problem` except the ``_free_text`` ones (cleaned instead).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)
    _free_text: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _storable(self) -> Self:
        try:
            self._check()
        except ConfigError as exc:
            raise _error(exc.message, exc.hint) from None
        for name in type(self).model_fields:
            if name in self._free_text:
                continue
            problem = value_problem(getattr(self, name))
            if problem is not None:
                raise _error(problem.at(name), problem.hint)
        return self

    def _check(self) -> None:
        """The model's own rules; raise `ConfigError`."""


def _error(message: str, hint: str | None) -> PydanticCustomError:
    # The message is data, not a template: braces in user text must not be formatted.
    return PydanticCustomError(
        _ERROR_TYPE,
        "{conveyor_message}",
        {"conveyor_hint": hint, "conveyor_message": message},
    )


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> tuple[str, str | None]:
    """``(one line, hint)`` for pydantic validation errors (at most three, ``field: message``)."""
    parts: list[str] = []
    hint: str | None = None
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid"))
        context = error.get("ctx") or {}
        if error.get("type") == _ERROR_TYPE:
            message = str(context.get("conveyor_message", message))
            hint = hint or context.get("conveyor_hint")
        hint = hint or _HINTS.get(str(error.get("type")))
        parts.append(f"{where}: {message}" if where else message)
    return "invalid request: " + "; ".join(parts), hint


_HINTS = {
    "finite_number": "JSON numbers must be finite: NaN and Infinity cannot be stored",
    "greater_than": "send a larger number",
    "greater_than_equal": "send a larger number",
    "less_than": "send a smaller number",
    "less_than_equal": "send a smaller number",
}


def _each(check: Callable[[Any], Any], values: Iterable[Any]) -> None:
    for value in values:
        check(value)


class PoolCreate(_Request):
    name: str
    type: str = "process"
    description: str = ""
    base_job_template: dict[str, Any] | None = None
    """Prefect's shape (``job_configuration`` + ``variables``); None: the type's default."""

    def _check(self) -> None:
        _names.check_pool_name(self.name)
        if self.base_job_template is not None:
            from conveyor._jobs import check_template

            check_template(self.base_job_template, pool_type=self.type)


class Pool(_Model):
    name: str
    type: str
    description: str
    created: datetime
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    """The pool's template (its own, or its type's default)."""


class _DeploymentFields(_Model):
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


class DeploymentCreate(_DeploymentFields, _Request):
    """What `deploy` sends. ``source`` is a secret-free source spec (``{"kind": ...}``)."""

    retries: int = Field(0, ge=0, le=_MAX_RETRIES)
    retry_delay_seconds: float = Field(0, ge=0, le=MAX_DURATION_SECONDS)
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_DURATION_SECONDS)

    def _check(self) -> None:
        _names.check_flow_name(self.flow_name)
        _names.check_deployment_name(self.name)
        _names.check_version(self.version)
        _names.check_pool_name(self.work_pool)
        if not isinstance(self.source.get("kind"), str):
            raise ConfigError("source: the source spec needs a 'kind'", hint='e.g. {"kind": "git"}')
        labels = self.job_variables.get("labels", [])
        if not isinstance(labels, list):
            raise ConfigError("job_variables.labels must be a list of labels")
        _each(_names.check_label, labels)


class Deployment(_DeploymentFields):
    """A stored deployment (what the server returns; not re-checked, so any row renders)."""

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


class RunCreate(_Request):
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
    secret_parameters: list[str] = Field(default_factory=list)
    """The parameters whose values are secret (``SecretStr``): ``****`` in ``parameters`` except
    in a claim's answer; the worker masks their values in the run's logs."""
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
    result_sha256: str | None = None
    """SHA-256 (hex) of the bytes stored at ``result_ref``: checked before they are unpickled
    (`conveyor.results.StoredResult`); None for a run stored before results had one."""
    result_size: int | None = None
    """Size in bytes of what is stored at ``result_ref``."""
    error: str | None = None
    labels: list[str] = Field(default_factory=list)
    """Labels a worker must have to claim the run (from ``job_variables["labels"]``)."""
    deployment_revision: int | None = None
    attempts: list[RunAttempt] = Field(default_factory=list)
    """Every finished attempt, oldest first (crashed/failed tries that were retried included)."""


class ClaimRequest(_Request):
    """``claim_id``: made up by the worker for one claim and re-presented until it has an answer
    (a lost reply): the server then returns the run it gave that claim id, if it still holds."""

    worker: str
    labels: list[str] = Field(default_factory=list)
    lease_seconds: float = Field(DEFAULT_LEASE_SECONDS, ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)
    wait_seconds: float = Field(0, ge=0, le=MAX_WAIT_SECONDS)
    claim_id: str | None = None

    def _check(self) -> None:
        _names.check_worker_name(self.worker)
        _each(_names.check_label, self.labels)
        _check_claim_id(self.claim_id)


def _check_claim_id(value: str | None) -> None:
    if value is not None and not CLAIM_ID_PATTERN.fullmatch(value):
        raise ConfigError(
            f"claim_id {value[:80]!r} is not a claim id",
            hint="8 to 64 letters, digits, '_' or '-' (e.g. uuid4().hex)",
        )


class RunHeartbeat(_Request):
    """``attempt``: the attempt the worker holds (a heartbeat for another attempt is a 409)."""

    worker: str
    lease_seconds: float = Field(DEFAULT_LEASE_SECONDS, ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)
    attempt: int | None = Field(None, ge=1)

    def _check(self) -> None:
        _names.check_worker_name(self.worker)


class RunHeartbeatReply(_Model):
    lease_expires: datetime
    cancel_requested: bool


class RunParametersRequest(_Request):
    """The holder of a run's ``attempt`` asks for its parameters with their secret values (the
    container of a docker or kubernetes pool, which gets the run by id, not by a claim)."""

    worker: str
    attempt: int = Field(ge=1)

    def _check(self) -> None:
        _names.check_worker_name(self.worker)


class RunParameters(_Model):
    """A run's parameters as its flow is called with them (secret values included)."""

    parameters: dict[str, Any]


class StateUpdate(_Request):
    """A worker's report. With ``attempt``, the report is idempotent per (run, attempt, state),
    and a final state is accepted after the lease expired as long as no other attempt started."""

    worker: str
    state: RunState
    attempt: int | None = Field(None, ge=1)
    version: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    result: Any = None
    result_ref: str | None = None
    result_sha256: str | None = None
    """With ``result_ref``: the SHA-256 (hex) of the bytes the worker stored there."""
    result_size: int | None = Field(None, ge=0)
    """With ``result_ref``: their size in bytes."""
    error: str | None = None

    _free_text: ClassVar[frozenset[str]] = frozenset({"error"})

    @field_validator("error")
    @classmethod
    def _clean_error(cls, value: str | None) -> str | None:
        return None if value is None else clean_text(value)

    def _check(self) -> None:
        _names.check_worker_name(self.worker)
        if self.version is not None:
            _names.check_version(self.version)
        _check_result_record(self.result_ref, self.result_sha256, self.result_size)


def _check_result_record(ref: str | None, sha256: str | None, size: int | None) -> None:
    if sha256 is not None and not RESULT_SHA256_PATTERN.fullmatch(sha256):
        raise ConfigError(
            f"result_sha256 {sha256[:80]!r} is not a SHA-256", hint="64 lowercase hex digits"
        )
    if (sha256 is None) != (size is None):
        raise ConfigError("result_sha256 and result_size go together")
    if sha256 is not None and ref is None:
        raise ConfigError("result_sha256 and result_size describe a result_ref: give one")


class LogRecord(_Request):
    """One log line. Its text is output, not input: NUL characters and lone surrogates in it are
    replaced by U+FFFD, never refused (a flow may print anything)."""

    timestamp: datetime
    level: str = "INFO"
    stream: str = "log"
    message: str

    _free_text: ClassVar[frozenset[str]] = frozenset({"message"})

    @field_validator("message")
    @classmethod
    def _clean_message(cls, value: str) -> str:
        return clean_text(value)


class LogLine(LogRecord):
    seq: int


class RunWatch(_Model):
    """What ``GET /api/runs/{id}/watch`` answers: the run, and its log lines after ``after``."""

    run: Run
    logs: list[LogLine] = Field(default_factory=list)


class WorkerHeartbeat(_Request):
    name: str
    pool: str
    labels: list[str] = Field(default_factory=list)
    limit: int = Field(1, ge=1)
    running: int = Field(0, ge=0)
    # The worker's code cache: bytes and checkouts held, hits and misses since the worker started.
    cache_bytes: int | None = Field(None, ge=0)
    cache_entries: int | None = Field(None, ge=0)
    cache_hits: int | None = Field(None, ge=0)
    cache_misses: int | None = Field(None, ge=0)
    stopping: bool = False
    """The worker's last beat: it has stopped (burst done, Ctrl-C), so it is offline at once
    rather than when its heartbeats age out."""

    def _check(self) -> None:
        _names.check_worker_name(self.name)
        _names.check_pool_name(self.pool)
        _each(_names.check_label, self.labels)

    @model_serializer(mode="wrap")
    def _without_default_stopping(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Sent only when true: a server from before it refuses a field it does not know, and
        a beat that does not stop is then the beat it always was."""
        data = handler(self)
        if not self.stopping and isinstance(data, dict):
            data.pop("stopping", None)
        return data


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


class SecretPut(_Request):
    value: str


class SecretInfo(_Model):
    name: str
    created: datetime
    updated: datetime


class SecretValue(_Model):
    name: str
    value: str


def build_models() -> None:
    """Build every model's validator now (they are deferred to first use, see `_Model`).

    The HTTP API calls this before its routes are declared: FastAPI wraps each request body in
    a type adapter, which would otherwise inherit ``defer_build`` and build a second validator
    on the first request (warning about the body's alias), so the flag is cleared as well.
    """
    pending: list[type[_Model]] = [_Model]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        model.model_rebuild()
        model.model_config["defer_build"] = False
