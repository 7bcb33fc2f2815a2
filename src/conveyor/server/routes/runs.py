"""``/api/runs`` and run creation: what people do with runs (workers use `claims`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from conveyor.schemas import LogLine, LogRecord, Run, RunCreate, RunState
from conveyor.server.db import utcnow
from conveyor.server.limits import check_log_batch
from conveyor.server.routes import Ctx
from conveyor.server.service import logs, runs

__all__ = ["router"]

router = APIRouter(tags=["runs"])


@router.post("/deployments/{flow_name}/{name}/runs", status_code=201)
def create_run(flow_name: str, name: str, body: RunCreate, ctx: Ctx) -> Run:
    run = ctx.db.write(
        lambda s: runs.create_run(s, flow_name, name, body, now=utcnow(), settings=ctx.settings)
    )
    ctx.doorbell.ring()
    return run


@router.get("/runs")
def list_runs(
    ctx: Ctx,
    deployment: str | None = None,
    state: RunState | None = None,
    pool: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Run]:
    ctx.sweep()
    return ctx.db.read(
        lambda s: runs.list_runs(s, deployment=deployment, state=state, pool=pool, limit=limit)
    )


@router.get("/runs/{run_id}")
def get_run(run_id: str, ctx: Ctx) -> Run:
    ctx.sweep()
    return ctx.db.read(lambda s: runs.get_run(s, run_id))


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, ctx: Ctx) -> Run:
    return ctx.db.write(lambda s: runs.cancel_run(s, run_id, now=utcnow()))


@router.post("/runs/{run_id}/logs", status_code=204)
def write_logs(run_id: str, records: list[LogRecord], ctx: Ctx) -> Response:
    check_log_batch(records, ctx.settings)
    ctx.db.write(lambda s: logs.write_logs(s, run_id, records))
    return Response(status_code=204)


@router.get("/runs/{run_id}/logs")
def read_logs(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[LogLine]:
    return ctx.db.read(lambda s: logs.read_logs(s, run_id, after=after, limit=limit))
