"""Run logs: batched ingestion, numbered by a per-run ``seq``, read in order after a ``seq``.

``seq`` comes from a counter on the run row, bumped in the same transaction as the insert, so the
lines of one run are numbered 1, 2, 3, ... with no gaps and a follower reading ``after=N`` never
misses a line committed later with a smaller number.

A worker numbers its batches 1, 2, 3, ... per run attempt and sends them in order, each until it
is stored; the run row keeps the last number stored per attempt (``log_batches``), read under the
row's lock, so a batch sent again after a lost reply is stored once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from conveyor.schemas import LogLine, LogRecord
from conveyor.server.tables import LogRow, RunRow

__all__ = ["append_system_log", "read_logs", "write_logs"]


def write_logs(
    session: Session,
    run_id: str,
    records: list[LogRecord],
    *,
    attempt: int | None = None,
    batch: int | None = None,
) -> int:
    """Store ``records`` for the run, in order; the last ``seq`` given out (the route has checked
    their count and sizes: `conveyor.server.limits.check_log_batch`). Batch ``batch`` of
    ``attempt`` is stored once: a number at or below the last one stored is ignored."""
    from conveyor.server.service.runs import find_run

    run = find_run(session, run_id, lock=batch is not None)
    if attempt is not None and batch is not None:
        stored = dict(run.log_batches or {})
        if batch <= int(stored.get(str(attempt), 0)):
            return run.log_seq
        run.log_batches = {**stored, str(attempt): batch}
        session.flush()
    if not records:
        return run.log_seq
    last = session.execute(
        update(RunRow)
        .where(RunRow.id == run.id)
        .values(log_seq=RunRow.log_seq + len(records))
        .returning(RunRow.log_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    first = last - len(records) + 1
    session.execute(
        insert(LogRow),
        [
            {
                "run_id": run.id,
                "seq": first + i,
                "timestamp": record.timestamp,
                "level": record.level[:16],
                "stream": record.stream[:16],
                "message": record.message,
            }
            for i, record in enumerate(records)
        ],
    )
    return int(last)


def append_system_log(
    session: Session, run: RunRow, message: str, *, level: str, now: datetime
) -> None:
    """A line from the server itself (crash notes, retries), in the run's own sequence."""
    run.log_seq += 1
    session.add(
        LogRow(
            run_id=run.id,
            seq=run.log_seq,
            timestamp=now,
            level=level,
            stream="conveyor",
            message=message,
        )
    )


def read_logs(session: Session, run_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
    """Lines with ``seq > after``, in order, at most ``limit``."""
    from conveyor.server.service.runs import find_run

    run = find_run(session, run_id, prefix=True)
    rows = session.scalars(
        select(LogRow)
        .where(LogRow.run_id == run.id, LogRow.seq > after)
        .order_by(LogRow.seq)
        .limit(limit)
    )
    return [
        LogLine(
            seq=row.seq,
            timestamp=row.timestamp,
            level=row.level,
            stream=row.stream,
            message=row.message,
        )
        for row in rows
    ]
