"""The run state machine: claims with leases, heartbeats, state reports, lease expiry, retries.

```
scheduled ──claim──▶ pending ──▶ running ──▶ completed | failed | crashed | cancelled
    ▲                   │  └──────────────────▶ failed | crashed | cancelled
    └── retry (attempt + 1, after retry_delay_seconds) ◀── failed / crashed with retries left
```

- **Claim**: one run moves ``scheduled → pending`` for one worker, with ``lease_expires``. On
  SQLite the write transaction is ``BEGIN IMMEDIATE`` (one writer at a time); on PostgreSQL the
  candidate row is locked ``FOR UPDATE SKIP LOCKED``. Either way the ``UPDATE`` re-checks
  ``state = 'scheduled'``, so a run is claimed exactly once. A run is claimable when its
  ``scheduled_at`` has passed and the worker has every label the run requires. A claim with a
  ``claim_id`` that already took a run which is still pending for that worker gets that run
  back (`reclaim`): the reply to the first request was lost.
- **Leases**: the holder extends its lease with heartbeats. A report or heartbeat from a worker
  that does not hold the run (another worker's run, a final run, another attempt) is a 409. A
  lease that has passed is still held until the sweep expires it: only the sweep decides.
- **Expiry**: a pending/running run whose lease has passed is ``crashed`` — unless the server
  itself has been available for less than one lease (``available_for``, see
  `conveyor.server.context`). Retries reuse the run: the attempt is recorded in
  ``run_attempts`` (``lease_expired``), a log line says what happened, and the run goes back to
  ``scheduled`` with ``attempt + 1`` when ``attempt <= max_retries`` (after
  ``retry_delay_seconds``); otherwise it stays ``crashed``. A reported ``failed`` retries the same
  way. A run whose cancellation was requested is never retried.
- **Reports with an attempt** are idempotent: the same (run, attempt, state) again answers the
  run as it is. And the holder of an attempt the sweep expired may still report its final state
  while no other attempt has started (the retry is still scheduled, or there was none): the
  report replaces the crash, since it is what happened.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, true, update
from sqlalchemy.orm import Session

from conveyor.errors import ConfigError, InvalidRequest
from conveyor.schemas import (
    DEFAULT_LEASE_SECONDS,
    ClaimRequest,
    Run,
    RunHeartbeat,
    RunHeartbeatReply,
    RunParameters,
    RunParametersRequest,
    RunState,
    StateUpdate,
)
from conveyor.server.secrets import SecretBox
from conveyor.server.service.logs import append_system_log
from conveyor.server.service.runs import find_run, record_attempt, run_models
from conveyor.server.service.sealed import unseal
from conveyor.server.tables import RunAttemptRow, RunRow

__all__ = [
    "claim_run",
    "claimable",
    "claimed_by",
    "expire_leases",
    "has_expired_leases",
    "heartbeat_run",
    "held_parameters",
    "reclaim",
    "set_run_state",
]

_CANDIDATES = 50
_HELD = (RunState.PENDING.value, RunState.RUNNING.value)
_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset(
        {RunState.RUNNING, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED}
    ),
    RunState.RUNNING: frozenset(
        {
            RunState.RUNNING,
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CRASHED,
            RunState.CANCELLED,
        }
    ),
}


def claimable(session: Session, pool: str, labels: list[str], *, now: datetime) -> list[str]:
    """Ids of runs in ``pool`` this worker could claim now, oldest first (a plain read)."""
    rows = session.execute(
        select(RunRow.id, RunRow.labels)
        .where(
            RunRow.work_pool == pool,
            RunRow.state == RunState.SCHEDULED.value,
            RunRow.scheduled_at <= now,
        )
        .order_by(RunRow.scheduled_at, RunRow.created, RunRow.id)
        .limit(_CANDIDATES)
    )
    have = set(labels)
    return [run_id for run_id, required in rows if set(required or []) <= have]


def claim_run(
    session: Session, pool: str, request: ClaimRequest, *, box: SecretBox, now: datetime
) -> Run | None:
    """Move one claimable run to ``pending`` for ``request.worker``; None if there is none. The
    answer carries the run's secret parameters decrypted with ``box`` (the worker calls the flow
    with them).

    With a ``claim_id`` that already took a run (a concurrent copy of this request committed
    first), that run is returned instead: claims with one id are serialised (SQLite has one
    writer; PostgreSQL takes an advisory lock on the id)."""
    if request.claim_id is not None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:claim_id, 0))"),
                {"claim_id": request.claim_id},
            )
        again = reclaim(session, pool, request, box=box, now=now)
        if again is not None:
            return again
    candidates = claimable(session, pool, request.labels, now=now)
    if not candidates:
        return None
    if session.get_bind().dialect.name == "postgresql":
        locked = session.scalars(
            select(RunRow.id)
            .where(RunRow.id.in_(candidates), RunRow.state == RunState.SCHEDULED.value)
            .order_by(RunRow.scheduled_at, RunRow.created, RunRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        candidates = [locked] if locked else []
    for run_id in candidates:
        row = session.get(RunRow, run_id)
        if row is None or row.scheduled_at is None:
            continue
        queued = max((now - row.scheduled_at).total_seconds(), 0.0)
        claimed = session.execute(
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.state == RunState.SCHEDULED.value)
            .values(
                state=RunState.PENDING.value,
                worker=request.worker,
                pending_at=now,
                running_at=None,
                ended_at=None,
                lease_expires=now + timedelta(seconds=request.lease_seconds),
                lease_seconds=request.lease_seconds,
                claim_id=request.claim_id,
                timings={"queue": round(queued, 6)},
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(row)
            try:
                return run_models(session, [row], box=box)[0]
            except ConfigError as exc:  # sealed under another key
                _fail_unreadable(session, row, exc, now=now)
    return None


def _fail_unreadable(session: Session, row: RunRow, exc: ConfigError, *, now: datetime) -> None:
    """Fail a just-claimed run whose secret parameters this server cannot decrypt, saying why
    (instead of failing every claim of its pool); it is not retried: no attempt could run."""
    error = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    row.error = error
    _end_attempt(session, row, RunState.FAILED, now=now, error=error, may_retry=False)
    session.flush()


def reclaim(
    session: Session, pool: str, request: ClaimRequest, *, box: SecretBox, now: datetime
) -> Run | None:
    """The run ``request.claim_id`` took, if it is still pending for this worker (its lease
    renewed, its secret parameters decrypted as `claim_run` does); None otherwise (no such
    claim, or it is over: claim anew)."""
    if request.claim_id is None:
        return None
    row = session.scalars(
        select(RunRow).where(RunRow.claim_id == request.claim_id).limit(1).with_for_update()
    ).first()
    if (
        row is None
        or row.worker != request.worker
        or row.work_pool != pool
        or row.state != RunState.PENDING.value
    ):
        return None
    row.lease_expires = now + timedelta(seconds=request.lease_seconds)
    row.lease_seconds = request.lease_seconds
    session.flush()
    return run_models(session, [row], box=box)[0]


def claimed_by(session: Session, claim_id: str) -> str | None:
    """The id of the pending run ``claim_id`` took, if any (a plain indexed read)."""
    return session.scalars(
        select(RunRow.id).where(RunRow.claim_id == claim_id, RunRow.state == RunState.PENDING.value)
    ).first()


def heartbeat_run(
    session: Session, run_id: str, beat: RunHeartbeat, *, now: datetime
) -> RunHeartbeatReply:
    """Extend the holder's lease; tell it whether cancellation was requested."""
    row = find_run(session, run_id, lock=True)
    if beat.attempt is not None and beat.attempt != row.attempt:
        raise _attempt_over(row, beat.worker, beat.attempt)
    if row.worker == beat.worker and row.state == RunState.CANCELLED.value:
        return RunHeartbeatReply(lease_expires=row.ended_at or now, cancel_requested=True)
    _check_holder(row, beat.worker)
    row.lease_expires = now + timedelta(seconds=beat.lease_seconds)
    row.lease_seconds = beat.lease_seconds
    return RunHeartbeatReply(lease_expires=row.lease_expires, cancel_requested=row.cancel_requested)


def held_parameters(
    session: Session, run_id: str, request: RunParametersRequest, *, box: SecretBox
) -> RunParameters:
    """The run's parameters with secret values decrypted, for the worker holding
    ``request.attempt`` (409 for anyone else, another attempt or a run no longer held)."""
    row = find_run(session, run_id)
    if request.attempt != row.attempt:
        raise _attempt_over(row, request.worker, request.attempt)
    _check_holder(row, request.worker)
    return RunParameters(parameters=unseal(box, row.parameters, where=f"run {row.id}"))


def set_run_state(session: Session, run_id: str, report: StateUpdate, *, now: datetime) -> Run:
    """Apply a worker's state report (legal transitions only, from the holder only; a repeated
    or late report with an attempt: see the module)."""
    row = find_run(session, run_id, lock=True)
    if report.attempt is not None:
        if _is_repeat(session, row, report):
            return run_models(session, [row])[0]
        taken_back = _take_back_expired(session, row, report, now=now)
        if not taken_back and report.attempt != row.attempt:
            raise _attempt_over(row, report.worker, report.attempt)
    _check_holder(row, report.worker)
    current, new = RunState(row.state), report.state
    if new not in _ALLOWED.get(current, frozenset()):
        raise InvalidRequest(
            f"run {row.id} cannot go from {current.value} to {new.value}", status_code=409
        )
    if report.version:
        row.version = report.version
    if report.timings:
        row.timings = {**row.timings, **report.timings}
    if new is RunState.RUNNING:
        row.running_at = row.running_at or now
        row.state = new.value
    else:
        row.result = report.result
        row.result_ref = report.result_ref
        row.result_sha256 = report.result_sha256
        row.result_size = report.result_size
        row.error = report.error
        _end_attempt(session, row, new, now=now, error=report.error)
    session.flush()
    return run_models(session, [row])[0]


def has_expired_leases(session: Session, *, now: datetime, available_for: float = math.inf) -> bool:
    """Whether any pending/running run's lease has passed, and the server has been available for
    at least that run's lease (a cheap indexed read)."""
    return (
        session.scalars(select(RunRow.id).where(*_expired(now, available_for)).limit(1)).first()
        is not None
    )


def expire_leases(
    session: Session, *, now: datetime, available_for: float = math.inf, limit: int = 100
) -> list[str]:
    """Mark up to ``limit`` runs with expired leases ``crashed`` (and retry them); their ids.

    ``available_for``: seconds the server has been able to hear renewals; a run whose lease is
    longer than that keeps it for now (its holder had no full lease to renew)."""
    query = (
        select(RunRow)
        .where(*_expired(now, available_for))
        .order_by(RunRow.lease_expires)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    expired = list(session.scalars(query))
    for row in expired:
        error = f"worker {row.worker!r} stopped renewing its lease (expired {row.lease_expires})"
        row.error = error
        _end_attempt(session, row, RunState.CRASHED, now=now, error=error, lease_expired=True)
    session.flush()
    return [row.id for row in expired]


def _expired(now: datetime, available_for: float) -> tuple[ColumnElement[bool], ...]:
    within: ColumnElement[bool] = true()
    if not math.isinf(available_for):
        lease = func.coalesce(RunRow.lease_seconds, DEFAULT_LEASE_SECONDS)
        within = lease <= available_for
    return (RunRow.state.in_(_HELD), RunRow.lease_expires < now, within)


def _check_holder(row: RunRow, worker: str) -> None:
    if row.worker != worker or row.state not in _HELD:
        holder = f"held by {row.worker!r}" if row.worker else "not claimed"
        raise InvalidRequest(
            f"worker {worker!r} does not hold run {row.id} (it is {row.state}, {holder})",
            status_code=409,
        )


def _attempt_over(row: RunRow, worker: str, attempt: int) -> InvalidRequest:
    return InvalidRequest(
        f"worker {worker!r} reported on attempt {attempt} of run {row.id}, which is at attempt "
        f"{row.attempt} ({row.state})",
        status_code=409,
    )


def _is_repeat(session: Session, row: RunRow, report: StateUpdate) -> bool:
    """The same final report of the same attempt again (its first reply was lost)."""
    if not report.state.is_final:
        return False
    record = session.get(RunAttemptRow, (row.id, report.attempt))
    return (
        record is not None and record.worker == report.worker and record.state == report.state.value
    )


def _take_back_expired(
    session: Session, row: RunRow, report: StateUpdate, *, now: datetime
) -> bool:
    """Give the attempt back to its holder when the sweep expired it but no other attempt has
    started since (the retry is still scheduled, or there was none), for its final report."""
    if not report.state.is_final or report.attempt is None:
        return False
    record = session.get(RunAttemptRow, (row.id, report.attempt))
    if record is None or not record.lease_expired or record.worker != report.worker:
        return False
    retry_waiting = row.attempt == report.attempt + 1 and row.state == RunState.SCHEDULED.value
    no_retry = row.attempt == report.attempt and row.state == RunState.CRASHED.value
    if not (retry_waiting or no_retry):
        return False
    started = record.running_at is not None
    restored: dict[str, Any] = {
        "attempt": record.attempt,
        "state": (RunState.RUNNING if started else RunState.PENDING).value,
        "worker": record.worker,
        "pending_at": record.pending_at,
        "running_at": record.running_at,
        "ended_at": None,
        "lease_expires": None,
        "timings": dict(record.timings or {}),
    }
    for name, value in restored.items():
        setattr(row, name, value)
    append_system_log(
        session,
        row,
        f"attempt {record.attempt}: worker {record.worker!r} reported {report.state.value} after "
        "its lease had expired, before another attempt started; the crash is withdrawn",
        level="WARNING",
        now=now,
    )
    return True


def _end_attempt(
    session: Session,
    row: RunRow,
    state: RunState,
    *,
    now: datetime,
    error: str | None,
    lease_expired: bool = False,
    may_retry: bool = True,
) -> None:
    """End the current attempt as ``state``: final, or rescheduled when retries are left (and
    ``may_retry``: no attempt of a run that cannot start could do better)."""
    record_attempt(session, row, state, now=now, error=error, lease_expired=lease_expired)
    retry = (
        may_retry
        and state in (RunState.FAILED, RunState.CRASHED)
        and row.attempt <= row.max_retries
        and not row.cancel_requested
    )
    if not retry:
        row.state = state.value
        row.ended_at = now
        row.lease_expires = None
        if state in (RunState.FAILED, RunState.CRASHED):
            append_system_log(
                session,
                row,
                f"attempt {row.attempt} {state.value}: {error or 'no error given'}",
                level="ERROR",
                now=now,
            )
        return
    delay = max(row.retry_delay_seconds, 0.0)
    append_system_log(
        session,
        row,
        f"attempt {row.attempt} {state.value}: {error or 'no error given'}; retrying in "
        f"{delay:g}s (attempt {row.attempt + 1} of {row.max_retries + 1})",
        level="WARNING",
        now=now,
    )
    row.attempt += 1
    row.state = RunState.SCHEDULED.value
    row.scheduled_at = now + timedelta(seconds=delay)
    row.worker = None
    row.pending_at = None
    row.running_at = None
    row.ended_at = None
    row.lease_expires = None
    row.claim_id = None
    row.timings = {}
    row.result = None
    row.result_ref = None
    row.result_sha256 = None
    row.result_size = None
