"""What workers call: claim (long-poll), run heartbeats, state reports, a held run's
parameters."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conveyor.schemas import (
    ClaimRequest,
    Run,
    RunHeartbeat,
    RunHeartbeatReply,
    RunParameters,
    RunParametersRequest,
    StateUpdate,
)
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["workers"])


@router.post(
    "/pools/{pool}/claim",
    response_model=Run,
    responses={204: {"description": "no run became claimable within wait_seconds"}},
)
async def claim_run(pool: str, body: ClaimRequest, request: Request, ctx: Ctx) -> Response:
    """One run for ``body.worker``, waiting up to ``wait_seconds`` for one to be claimable."""
    deadline = time.monotonic() + api.claim_wait_seconds(body)
    await run_in_threadpool(api.require_pool, ctx, pool)
    if deadline > time.monotonic():
        ctx.watch_changes()
    run = await run_in_threadpool(api.reclaim, ctx, pool, body)
    while run is None:
        ticket = ctx.doorbell.ticket()
        run = await run_in_threadpool(api.claim_once, ctx, pool, body)
        if run is not None:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.stopping or await request.is_disconnected():
            run = await run_in_threadpool(api.reclaim, ctx, pool, body)
            if run is None:
                return Response(status_code=204)
            break
        await ctx.doorbell.wait(min(ctx.poll_seconds, remaining), since=ticket)
    return JSONResponse(run.model_dump(mode="json"))


@router.post("/runs/{run_id}/heartbeat")
def heartbeat_run(run_id: str, body: RunHeartbeat, ctx: Ctx) -> RunHeartbeatReply:
    return api.heartbeat_run(ctx, run_id, body)


@router.post("/runs/{run_id}/parameters")
def run_parameters(run_id: str, body: RunParametersRequest, ctx: Ctx) -> RunParameters:
    return api.run_parameters(ctx, run_id, body)


@router.post("/runs/{run_id}/state")
def set_run_state(run_id: str, body: StateUpdate, ctx: Ctx) -> Run:
    return api.set_run_state(ctx, run_id, body)
