"""``/api/workers``: heartbeats and the list with online/offline status."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.schemas import Worker, WorkerHeartbeat
from conveyor.server.db import utcnow
from conveyor.server.routes import Ctx
from conveyor.server.service import workers

__all__ = ["router"]

router = APIRouter(tags=["workers"])


@router.post("/workers/heartbeat")
def worker_heartbeat(body: WorkerHeartbeat, ctx: Ctx) -> Worker:
    return ctx.db.write(lambda s: workers.worker_heartbeat(s, body, now=utcnow()))


@router.get("/workers")
def list_workers(ctx: Ctx, pool: str | None = None) -> list[Worker]:
    now = utcnow()
    return ctx.db.read(lambda s: workers.list_workers(s, now=now, pool=pool))
