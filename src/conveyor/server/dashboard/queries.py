"""The dashboard's own reads: narrow, indexed queries for lists that must stay fast at 10,000 runs.

Everything that changes state goes through `conveyor.server.service`; these only read, and only
the columns a page shows. The run list pages by keyset (``created``, ``id``), never by offset,
so the 200th page costs what the first does (indexes ``ix_runs_created``,
``ix_runs_state_created``, ``ix_runs_worker_created``, ``ix_runs_deployment``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from conveyor.schemas import RunState
from conveyor.server.tables import DeploymentRow, LogRow, RunRow, WorkerRow

__all__ = [
    "Cursor",
    "RunFilter",
    "RunPage",
    "RunSummary",
    "active_runs_by_worker",
    "deployment_choices",
    "log_batch",
    "logged_hint",
    "pool_figures",
    "recent_runs",
    "run_page",
    "worker_names",
]

PAGE_SIZE = 50
_ACTIVE = (RunState.PENDING.value, RunState.RUNNING.value)


@dataclass(frozen=True)
class RunSummary:
    """One row of a run list."""

    id: str
    flow_name: str
    deployment_name: str
    state: str
    worker: str | None
    attempt: int
    version: str
    created: datetime
    running_at: datetime | None
    ended_at: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.running_at is None:
            return None
        if self.ended_at is None:
            return None
        return max((self.ended_at - self.running_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first run list: ``<created ISO>~<id>``."""

    created: datetime
    id: str

    def text(self) -> str:
        return f"{self.created.isoformat()}~{self.id}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        if not text or "~" not in text:
            return None
        stamp, _, run_id = text.partition("~")
        try:
            created = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return cls(created=created, id=run_id) if created.tzinfo else None


@dataclass(frozen=True)
class RunFilter:
    state: str | None = None
    deployment_id: str | None = None
    worker: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    total: int
    older: Cursor | None
    """Where the next (older) page starts; None on the last page."""
    newer: Cursor | None
    """Where the previous (newer) page ends; None on the first page."""


_SUMMARY_COLUMNS = (
    RunRow.id,
    RunRow.flow_name,
    RunRow.deployment_name,
    RunRow.state,
    RunRow.worker,
    RunRow.attempt,
    RunRow.version,
    RunRow.created,
    RunRow.running_at,
    RunRow.ended_at,
)


def _filtered(query: Any, f: RunFilter) -> Any:
    if f.state:
        query = query.where(RunRow.state == f.state)
    if f.deployment_id:
        query = query.where(RunRow.deployment_id == f.deployment_id)
    if f.worker:
        query = query.where(RunRow.worker == f.worker)
    if f.since is not None:
        query = query.where(RunRow.created >= f.since)
    if f.until is not None:
        query = query.where(RunRow.created < f.until)
    return query


def run_page(
    session: Session,
    f: RunFilter,
    *,
    older_than: Cursor | None = None,
    newer_than: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> RunPage:
    """One page of runs matching ``f``, newest first, and the total that match."""
    query = _filtered(select(*_SUMMARY_COLUMNS), f)
    if newer_than is not None:
        query = query.where(
            or_(
                RunRow.created > newer_than.created,
                and_(RunRow.created == newer_than.created, RunRow.id > newer_than.id),
            )
        ).order_by(RunRow.created, RunRow.id)
    else:
        if older_than is not None:
            query = query.where(
                or_(
                    RunRow.created < older_than.created,
                    and_(RunRow.created == older_than.created, RunRow.id < older_than.id),
                )
            )
        query = query.order_by(RunRow.created.desc(), RunRow.id.desc())
    rows = [RunSummary(**row._asdict()) for row in session.execute(query.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    if newer_than is not None:
        rows.reverse()
        has_newer, has_older = more, True
    else:
        has_newer, has_older = older_than is not None, more
    total = session.scalar(_filtered(select(func.count()).select_from(RunRow), f)) or 0
    return RunPage(
        runs=rows,
        total=int(total),
        older=Cursor(rows[-1].created, rows[-1].id) if rows and has_older else None,
        newer=Cursor(rows[0].created, rows[0].id) if rows and has_newer else None,
    )


def recent_runs(session: Session, deployment_id: str, *, limit: int = 10) -> list[RunSummary]:
    """The newest runs of one deployment."""
    query = (
        select(*_SUMMARY_COLUMNS)
        .where(RunRow.deployment_id == deployment_id)
        .order_by(RunRow.created.desc(), RunRow.id.desc())
        .limit(limit)
    )
    return [RunSummary(**row._asdict()) for row in session.execute(query)]


def comparable_runs(session: Session, deployment_id: str, *, limit: int = 20) -> list[RunSummary]:
    """The newest runs of one deployment, plus the newest run of every other code version it
    ran (so any two versions can be compared, however many runs one of them had)."""
    recent = recent_runs(session, deployment_id, limit=limit)
    seen = {run.version for run in recent}
    newest = (
        select(RunRow.version, func.max(RunRow.created).label("created"))
        .where(RunRow.deployment_id == deployment_id)
        .group_by(RunRow.version)
        .order_by(func.max(RunRow.created).desc())
        .limit(limit)
        .subquery()
    )
    query = (
        select(*_SUMMARY_COLUMNS)
        .join(newest, (RunRow.version == newest.c.version) & (RunRow.created == newest.c.created))
        .where(RunRow.deployment_id == deployment_id)
        .order_by(RunRow.created.desc())
    )
    found = list(recent)
    for row in session.execute(query):
        run = RunSummary(**row._asdict())
        if run.version not in seen:
            seen.add(run.version)
            found.append(run)
    return found


def deployment_choices(session: Session) -> list[tuple[str, str]]:
    """(id, ``flow/name``) of every deployment, for the run filter."""
    rows = session.execute(
        select(DeploymentRow.id, DeploymentRow.flow_name, DeploymentRow.name).order_by(
            DeploymentRow.flow_name, DeploymentRow.name
        )
    )
    return [(row.id, f"{row.flow_name}/{row.name}") for row in rows]


def worker_names(session: Session) -> list[str]:
    return list(session.scalars(select(WorkerRow.name).order_by(WorkerRow.name)))


def active_runs_by_worker(session: Session) -> dict[str, list[RunSummary]]:
    """Pending and running runs, by the worker holding them (index ``ix_runs_lease``)."""
    query = select(*_SUMMARY_COLUMNS).where(RunRow.state.in_(_ACTIVE)).order_by(RunRow.created)
    found: dict[str, list[RunSummary]] = defaultdict(list)
    for row in session.execute(query):
        summary = RunSummary(**row._asdict())
        if summary.worker:
            found[summary.worker].append(summary)
    return dict(found)


def pool_figures(session: Session) -> dict[str, dict[str, int]]:
    """Per pool: deployments, queued runs (scheduled), active runs (pending or running)."""
    figures: dict[str, dict[str, int]] = defaultdict(
        lambda: {"deployments": 0, "scheduled": 0, "active": 0}
    )
    for pool, count in session.execute(
        select(DeploymentRow.work_pool, func.count()).group_by(DeploymentRow.work_pool)
    ):
        figures[pool]["deployments"] = int(count)
    states = (RunState.SCHEDULED.value, *_ACTIVE)
    for pool, state, count in session.execute(
        select(RunRow.work_pool, RunRow.state, func.count())
        .where(RunRow.state.in_(states))
        .group_by(RunRow.work_pool, RunRow.state)
    ):
        key = "scheduled" if state == RunState.SCHEDULED.value else "active"
        figures[pool][key] += int(count)
    return dict(figures)


def logged_hint(session: Session, run_id: str) -> str | None:
    """The last ``hint: ...`` line the worker logged for the run (the hint of its error)."""
    message = session.scalar(
        select(LogRow.message)
        .where(
            LogRow.run_id == run_id,
            LogRow.stream == "worker",
            LogRow.message.startswith("hint: "),
        )
        .order_by(LogRow.seq.desc())
        .limit(1)
    )
    return message.removeprefix("hint: ") if message else None


def log_batch(
    session: Session, *, run_id: str, after: int, limit: int = 5000
) -> list[tuple[int, datetime, str, str, str]]:
    """(seq, timestamp, level, stream, message) of the lines after ``after``, in order."""
    query = (
        select(LogRow.seq, LogRow.timestamp, LogRow.level, LogRow.stream, LogRow.message)
        .where(LogRow.run_id == run_id, LogRow.seq > after)
        .order_by(LogRow.seq)
        .limit(limit)
    )
    return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]
