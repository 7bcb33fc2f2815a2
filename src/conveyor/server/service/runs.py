"""Runs: creation (validated parameters, pinned code), look-ups, listing and cancellation.

A run copies what it needs from its deployment when it is created — the code ``version``, the
``source`` spec, ``entrypoint``, ``pull_steps``, ``job_variables``, retries and timeout — so a
later deploy never changes a queued run. Run ids are UUIDs; look-ups from people (`get_run`,
cancel, logs) also accept a unique prefix of at least 4 characters.

Secret parameters are stored sealed (`conveyor.server.service.sealed`) and shown as ``****``;
only a worker's claim answer carries them (`run_models` with the box).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor._values import displayable_fields
from conveyor.errors import ConveyorError, InvalidRequest, ObjectNotFound
from conveyor.schemas import Run, RunAttempt, RunCreate, RunState
from conveyor.server.limits import check_parameters_size
from conveyor.server.secrets import SecretBox
from conveyor.server.service.deployments import find_deployment
from conveyor.server.service.sealed import masked, seal, secret_keys, unseal
from conveyor.server.tables import DeploymentRow, PoolRow, RunAttemptRow, RunRow
from conveyor.settings import Settings

__all__ = [
    "cancel_run",
    "create_run",
    "find_run",
    "get_run",
    "list_runs",
    "record_attempt",
    "run_model",
    "run_models",
]

logger = logging.getLogger(__name__)

_MIN_PREFIX = 4


def create_run(
    session: Session,
    flow_name: str,
    name: str,
    body: RunCreate,
    *,
    box: SecretBox,
    now: datetime,
    settings: Settings | None = None,
) -> Run:
    """A new ``scheduled`` run of ``flow_name/name``; 422 when the parameters do not fit, 413
    when they are larger than ``settings.max_parameters_bytes``. Secret parameters are sealed
    with ``box`` before they are stored."""
    from conveyor._params import validate_parameters

    deployment = find_deployment(session, flow_name, name)
    defaults = {k: v for k, v in deployment.parameters.items() if k not in body.parameters}
    defaults = unseal(box, defaults, where=f"deployment {flow_name}/{name}")
    parameters = {**defaults, **body.parameters}
    if settings is not None:
        check_parameters_size(parameters, settings)
    try:
        parameters = validate_parameters(deployment.parameter_schema, parameters)
    except ConveyorError as exc:
        raise InvalidRequest(
            f"{flow_name}/{name}: {exc.message}", status_code=422, hint=exc.hint
        ) from exc
    job_variables = _effective_job_variables(
        session, deployment.work_pool, deployment.job_variables
    )
    labels = job_variables.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        labels = []
    row = RunRow(
        id=str(uuid.uuid4()),
        deployment_id=deployment.id,
        deployment_revision=deployment.revision,
        flow_name=deployment.flow_name,
        deployment_name=deployment.name,
        state=RunState.SCHEDULED.value,
        parameters=seal(box, deployment.parameter_schema, parameters),
        version=deployment.version,
        source=deployment.source,
        entrypoint=deployment.entrypoint,
        work_pool=deployment.work_pool,
        pull_steps=deployment.pull_steps,
        job_variables=job_variables,
        labels=sorted(set(labels)),
        follow_ref=deployment.follow_ref if body.follow_ref is None else body.follow_ref,
        worker=None,
        attempt=1,
        max_retries=deployment.retries,
        retry_delay_seconds=deployment.retry_delay_seconds,
        timeout_seconds=deployment.timeout_seconds,
        cancel_requested=False,
        created=now,
        scheduled_at=now,
        timings={},
        result=None,
        log_seq=0,
    )
    session.add(row)
    session.flush()
    return run_model(row, [], schema=deployment.parameter_schema)


def _effective_job_variables(
    session: Session, pool_name: str, own: Mapping[str, Any]
) -> dict[str, Any]:
    """The deployment's job variables over the defaults of its pool's own base job template
    (``env`` merged key by key); a pool on its type's default template adds nothing."""
    from conveyor._jobvars import effective_job_variables

    pool = session.get(PoolRow, pool_name)
    return effective_job_variables(pool.base_job_template if pool is not None else None, own)


def find_run(session: Session, run_id: str, *, prefix: bool = False, lock: bool = False) -> RunRow:
    """The run ``run_id`` (or, with ``prefix``, the one run whose id starts with it), or 404."""
    row = session.get(RunRow, run_id, with_for_update=lock)
    if row is None and prefix and len(run_id) >= _MIN_PREFIX and "%" not in run_id:
        matches = session.scalars(
            select(RunRow.id).where(RunRow.id.startswith(run_id, autoescape=True)).limit(2)
        ).all()
        if len(matches) > 1:
            raise InvalidRequest(
                f"run id prefix {run_id!r} is ambiguous",
                status_code=400,
                hint="give more of the id",
            )
        if matches:
            row = session.get(RunRow, matches[0], with_for_update=lock)
    if row is None:
        raise ObjectNotFound(f"run {run_id!r} not found", status_code=404, hint="conveyor runs ls")
    return row


def get_run(session: Session, run_id: str) -> Run:
    row = find_run(session, run_id, prefix=True)
    return run_models(session, [row])[0]


def list_runs(
    session: Session,
    *,
    deployment: str | None = None,
    state: RunState | None = None,
    pool: str | None = None,
    limit: int = 100,
) -> list[Run]:
    """Runs, newest first, filtered by ``flow/name``, state and pool."""
    query = select(RunRow).order_by(RunRow.created.desc(), RunRow.id).limit(limit)
    if deployment:
        flow_name, _, name = deployment.partition("/")
        row = find_deployment(session, flow_name, name)
        query = query.where(RunRow.deployment_id == row.id)
    if state is not None:
        query = query.where(RunRow.state == state.value)
    if pool:
        query = query.where(RunRow.work_pool == pool)
    return run_models(session, list(session.scalars(query)))


def cancel_run(session: Session, run_id: str, *, now: datetime) -> Run:
    """Cancel now if scheduled or pending; if running, ask the worker (``cancel_requested``)."""
    row = find_run(session, run_id, prefix=True, lock=True)
    state = RunState(row.state)
    if state.is_final:
        raise InvalidRequest(f"run {row.id} is already {state.value}", status_code=409)
    row.cancel_requested = True
    if state is RunState.RUNNING:
        return run_models(session, [row])[0]
    if state is RunState.PENDING:
        record_attempt(session, row, RunState.CANCELLED, now=now, error=None)
    row.state = RunState.CANCELLED.value
    row.ended_at = now
    row.lease_expires = None
    session.flush()
    return run_models(session, [row])[0]


def record_attempt(
    session: Session,
    row: RunRow,
    state: RunState,
    *,
    now: datetime,
    error: str | None,
    lease_expired: bool = False,
) -> None:
    """Keep how the run's current attempt ended (``lease_expired``: ended by the sweep)."""
    session.merge(
        RunAttemptRow(
            run_id=row.id,
            attempt=row.attempt,
            state=state.value,
            worker=row.worker,
            version=row.version,
            pending_at=row.pending_at,
            running_at=row.running_at,
            ended_at=now,
            timings=dict(row.timings),
            error=error,
            lease_expired=lease_expired,
        )
    )


def run_models(session: Session, rows: list[RunRow], *, box: SecretBox | None = None) -> list[Run]:
    """The API models of ``rows``, each with its attempts. Secret parameters are ``****``
    (by their deployment's schema), unless ``box`` is given: then they are decrypted, for the
    worker that runs the run and nobody else."""
    attempts: dict[str, list[RunAttempt]] = {row.id: [] for row in rows}
    if rows:
        query = (
            select(RunAttemptRow)
            .where(RunAttemptRow.run_id.in_(list(attempts)))
            .order_by(RunAttemptRow.run_id, RunAttemptRow.attempt)
        )
        for attempt in session.scalars(query):
            attempts[attempt.run_id].append(_attempt_model(attempt))
    schemas = _parameter_schemas(session, rows)
    return [
        run_model(row, attempts[row.id], schema=schemas.get(row.deployment_id), box=box)
        for row in rows
    ]


def _parameter_schemas(session: Session, rows: list[RunRow]) -> dict[str, dict[str, Any]]:
    """The parameter schemas of the deployments of ``rows`` that have parameters, by id."""
    ids = {row.deployment_id for row in rows if row.parameters}
    if not ids:
        return {}
    query = select(DeploymentRow.id, DeploymentRow.parameter_schema).where(
        DeploymentRow.id.in_(sorted(ids))
    )
    return {deployment_id: schema for deployment_id, schema in session.execute(query)}


def run_model(
    row: RunRow,
    attempts: Iterable[RunAttempt],
    *,
    schema: dict[str, Any] | None,
    box: SecretBox | None = None,
) -> Run:
    """The API model of ``row``: secret parameters (by ``schema``, and envelopes) masked, or
    decrypted with ``box``, and named in ``secret_parameters``. A value stored before input was
    checked that cannot be rendered (a lone surrogate, nesting past the limit) is shown cleaned,
    never a failed listing."""
    values: dict[str, Any] = {
        field: getattr(row, field) for field in _RUN_FIELDS if field not in _NOT_COLUMNS
    }
    values["secret_parameters"] = secret_keys(schema, row.parameters)
    values["parameters"] = (
        masked(schema, row.parameters)
        if box is None
        else unseal(box, row.parameters, where=f"run {row.id}")
    )
    values, replaced = displayable_fields(values)
    if replaced:
        logger.warning("run shown cleaned run=%s fields=%s", row.id, ",".join(replaced))
    return Run(state=RunState(row.state), attempts=list(attempts), **values)


def _attempt_model(row: RunAttemptRow) -> RunAttempt:
    values, _ = displayable_fields({"error": row.error, "timings": row.timings})
    return RunAttempt(
        attempt=row.attempt,
        state=RunState(row.state),
        worker=row.worker,
        version=row.version,
        pending_at=row.pending_at,
        running_at=row.running_at,
        ended_at=row.ended_at,
        **values,
    )


_RUN_FIELDS = tuple(Run.model_fields)
_NOT_COLUMNS = frozenset({"attempts", "state", "secret_parameters"})
