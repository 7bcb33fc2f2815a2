"""Workers: heartbeats, and ``online`` / ``offline`` by the age of the last one (``offline`` at
once after a beat that says the worker stopped)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.schemas import Worker, WorkerHeartbeat
from conveyor.server.service.pools import require_pool
from conveyor.server.tables import WorkerRow

__all__ = ["ONLINE_WINDOW", "list_workers", "worker_heartbeat"]

ONLINE_WINDOW = timedelta(seconds=30)
"""A worker is ``online`` while its last heartbeat is younger than this (workers beat every few
seconds)."""


def worker_heartbeat(session: Session, beat: WorkerHeartbeat, *, now: datetime) -> Worker:
    """Record that worker ``beat.name`` is alive, creating it on its first beat."""
    require_pool(session, beat.pool)
    row = session.get(WorkerRow, beat.name, with_for_update=True)
    if row is None:
        row = WorkerRow(name=beat.name, created=now)
        session.add(row)
    row.pool = beat.pool
    row.labels = sorted(set(beat.labels))
    row.limit = beat.limit
    row.running = beat.running
    row.last_heartbeat = now
    row.stopped = beat.stopping
    if beat.cache_bytes is not None:  # older workers do not send cache figures
        row.cache_bytes, row.cache_entries = beat.cache_bytes, beat.cache_entries
        row.cache_hits, row.cache_misses = beat.cache_hits, beat.cache_misses
    session.flush()
    return _model(row, now=now)


def list_workers(session: Session, *, now: datetime, pool: str | None = None) -> list[Worker]:
    """Every worker that ever beat, most recent first."""
    query = select(WorkerRow).order_by(WorkerRow.last_heartbeat.desc(), WorkerRow.name)
    if pool:
        query = query.where(WorkerRow.pool == pool)
    return [_model(row, now=now) for row in session.scalars(query)]


def _model(row: WorkerRow, *, now: datetime) -> Worker:
    online = not row.stopped and now - row.last_heartbeat < ONLINE_WINDOW
    return Worker(
        name=row.name,
        pool=row.pool,
        labels=row.labels,
        limit=row.limit,
        running=row.running,
        last_heartbeat=row.last_heartbeat,
        status="online" if online else "offline",
        cache_bytes=row.cache_bytes,
        cache_entries=row.cache_entries,
        cache_hits=row.cache_hits,
        cache_misses=row.cache_misses,
    )
