"""``/api/workers``: heartbeats and the list with online/offline status."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.schemas import Worker, WorkerHeartbeat
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["workers"])


@router.post("/workers/heartbeat")
def worker_heartbeat(body: WorkerHeartbeat, ctx: Ctx) -> Worker:
    return api.worker_heartbeat(ctx, body)


@router.get("/workers")
def list_workers(ctx: Ctx, pool: str | None = None) -> list[Worker]:
    return api.list_workers(ctx, pool=pool)
