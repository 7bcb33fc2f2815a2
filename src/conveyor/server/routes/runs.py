"""``/api/runs`` and run creation: what people do with runs (workers use `claims`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from conveyor.schemas import LogLine, LogRecord, Run, RunCreate, RunState, RunWatch
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["runs"])


@router.post("/deployments/{flow_name}/{name}/runs", status_code=201)
def create_run(flow_name: str, name: str, body: RunCreate, ctx: Ctx) -> Run:
    return api.create_run(ctx, flow_name, name, body)


@router.get("/runs")
def list_runs(
    ctx: Ctx,
    deployment: str | None = None,
    state: RunState | None = None,
    pool: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Run]:
    return api.list_runs(ctx, deployment=deployment, state=state, pool=pool, limit=limit)


@router.get("/runs/{run_id}")
def get_run(run_id: str, ctx: Ctx) -> Run:
    return api.get_run(ctx, run_id)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, ctx: Ctx) -> Run:
    return api.cancel_run(ctx, run_id)


@router.post("/runs/{run_id}/logs", status_code=204)
def write_logs(
    run_id: str,
    records: list[LogRecord],
    ctx: Ctx,
    attempt: Annotated[int | None, Query(ge=1)] = None,
    batch: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    api.write_logs(ctx, run_id, records, attempt=attempt, batch=batch)
    return Response(status_code=204)


@router.get("/runs/{run_id}/logs")
def read_logs(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[LogLine]:
    return api.read_logs(ctx, run_id, after=after, limit=limit)


@router.get("/runs/{run_id}/watch")
def watch_run(
    run_id: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0)] = 0,
    state: RunState | None = None,
    wait: Annotated[float, Query(ge=0, le=api.MAX_WATCH)] = 0.0,
) -> RunWatch:
    """The run and its new lines, as soon as there is news (long-poll up to ``wait`` s)."""
    return api.watch_run(ctx, run_id, after=after, state=state, wait=wait)
