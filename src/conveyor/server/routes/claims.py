"""What workers call: claim (long-poll), run heartbeats, state reports."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conveyor.schemas import ClaimRequest, Run, RunHeartbeat, RunHeartbeatReply, StateUpdate
from conveyor.server.db import utcnow
from conveyor.server.routes import Ctx
from conveyor.server.service import claims, pools

__all__ = ["MAX_WAIT", "POLL_EVERY", "router"]

router = APIRouter(tags=["workers"])

MAX_WAIT = 60.0
"""The longest a claim waits for a run, whatever ``wait_seconds`` asks."""
POLL_EVERY = 0.05
"""Seconds between database checks while a claim waits (other processes add runs too)."""


@router.post(
    "/pools/{pool}/claim",
    response_model=Run,
    responses={204: {"description": "no run became claimable within wait_seconds"}},
)
async def claim_run(pool: str, body: ClaimRequest, request: Request, ctx: Ctx) -> Response:
    """One run for ``body.worker``, waiting up to ``wait_seconds`` for one to be claimable."""
    deadline = time.monotonic() + min(max(body.wait_seconds, 0.0), MAX_WAIT)
    await run_in_threadpool(ctx.db.read, lambda s: pools.require_pool(s, pool))
    while True:
        run = await run_in_threadpool(_claim_once, ctx, pool, body)
        if run is not None:
            return JSONResponse(run.model_dump(mode="json"))
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await request.is_disconnected():
            return Response(status_code=204)
        await ctx.doorbell.wait(min(POLL_EVERY, remaining))


def _claim_once(ctx: Ctx, pool: str, body: ClaimRequest) -> Run | None:
    ctx.sweep()
    now = utcnow()
    # A plain read first: an idle poll never takes SQLite's write lock.
    if not ctx.db.read(lambda s: claims.claimable(s, pool, body.labels, now=now)):
        return None
    return ctx.db.write(lambda s: claims.claim_run(s, pool, body, now=utcnow()))


@router.post("/runs/{run_id}/heartbeat")
def heartbeat_run(run_id: str, body: RunHeartbeat, ctx: Ctx) -> RunHeartbeatReply:
    ctx.sweep()
    return ctx.db.write(lambda s: claims.heartbeat_run(s, run_id, body, now=utcnow()))


@router.post("/runs/{run_id}/state")
def set_run_state(run_id: str, body: StateUpdate, ctx: Ctx) -> Run:
    ctx.sweep()
    run = ctx.db.write(lambda s: claims.set_run_state(s, run_id, body, now=utcnow()))
    if run.state == "scheduled":  # a retry: wake waiting claims
        ctx.doorbell.ring()
    return run
