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
  ``scheduled_at`` has passed and the worker has every label the run requires.
- **Leases**: the holder extends its lease with heartbeats. A report or heartbeat from a worker
  that does not hold the lease (another worker's run, a final run, an expired lease) is a 409.
- **Expiry**: a pending/running run whose lease has passed is ``crashed``. Retries reuse the run:
  the attempt is recorded in ``run_attempts``, a log line says what happened, and the run goes back
  to ``scheduled`` with ``attempt + 1`` when ``attempt <= max_retries`` (after
  ``retry_delay_seconds``); otherwise it stays ``crashed``. A reported ``failed`` retries the same
  way. A run whose cancellation was requested is never retried.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.errors import InvalidRequest
from conveyor.schemas import (
    ClaimRequest,
    Run,
    RunHeartbeat,
    RunHeartbeatReply,
    RunState,
    StateUpdate,
)
from conveyor.server.service.logs import append_system_log
from conveyor.server.service.runs import find_run, record_attempt, run_models
from conveyor.server.tables import RunRow

__all__ = [
    "claim_run",
    "claimable",
    "expire_leases",
    "has_expired_leases",
    "heartbeat_run",
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


def claim_run(session: Session, pool: str, request: ClaimRequest, *, now: datetime) -> Run | None:
    """Move one claimable run to ``pending`` for ``request.worker``; None if there is none."""
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
                timings={"queue": round(queued, 6)},
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(row)
            return run_models(session, [row])[0]
    return None


def heartbeat_run(
    session: Session, run_id: str, beat: RunHeartbeat, *, now: datetime
) -> RunHeartbeatReply:
    """Extend the holder's lease; tell it whether cancellation was requested."""
    row = find_run(session, run_id, lock=True)
    if row.worker == beat.worker and row.state == RunState.CANCELLED.value:
        return RunHeartbeatReply(lease_expires=row.ended_at or now, cancel_requested=True)
    _check_holder(row, beat.worker, now=now)
    row.lease_expires = now + timedelta(seconds=beat.lease_seconds)
    return RunHeartbeatReply(lease_expires=row.lease_expires, cancel_requested=row.cancel_requested)


def set_run_state(session: Session, run_id: str, report: StateUpdate, *, now: datetime) -> Run:
    """Apply a worker's state report (legal transitions only, from the lease holder only)."""
    row = find_run(session, run_id, lock=True)
    _check_holder(row, report.worker, now=now)
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
        row.error = report.error
        _end_attempt(session, row, new, now=now, error=report.error)
    session.flush()
    return run_models(session, [row])[0]


def has_expired_leases(session: Session, *, now: datetime) -> bool:
    """Whether any pending/running run's lease has passed (a cheap indexed read)."""
    return (
        session.scalars(
            select(RunRow.id).where(RunRow.state.in_(_HELD), RunRow.lease_expires < now).limit(1)
        ).first()
        is not None
    )


def expire_leases(session: Session, *, now: datetime, limit: int = 100) -> list[str]:
    """Mark up to ``limit`` runs with expired leases ``crashed`` (and retry them); their ids."""
    query = (
        select(RunRow)
        .where(RunRow.state.in_(_HELD), RunRow.lease_expires < now)
        .order_by(RunRow.lease_expires)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    expired = list(session.scalars(query))
    for row in expired:
        error = f"worker {row.worker!r} stopped renewing its lease (expired {row.lease_expires})"
        row.error = error
        _end_attempt(session, row, RunState.CRASHED, now=now, error=error)
    session.flush()
    return [row.id for row in expired]


def _check_holder(row: RunRow, worker: str, *, now: datetime) -> None:
    if row.worker != worker or row.state not in _HELD:
        holder = f"held by {row.worker!r}" if row.worker else "not claimed"
        raise InvalidRequest(
            f"worker {worker!r} does not hold run {row.id} (it is {row.state}, {holder})",
            status_code=409,
        )
    if row.lease_expires is not None and row.lease_expires < now:
        raise InvalidRequest(
            f"worker {worker!r} lost the lease on run {row.id} (expired {row.lease_expires})",
            status_code=409,
        )


def _end_attempt(
    session: Session, row: RunRow, state: RunState, *, now: datetime, error: str | None
) -> None:
    """End the current attempt as ``state``: final, or rescheduled when retries are left."""
    record_attempt(session, row, state, now=now, error=error)
    retry = (
        state in (RunState.FAILED, RunState.CRASHED)
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
    row.timings = {}
    row.result = None
    row.result_ref = None
