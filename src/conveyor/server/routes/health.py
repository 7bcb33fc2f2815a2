"""``GET /api/health``: answers without an API key, so a load balancer can probe it."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Ctx) -> dict[str, str]:
    """``ok`` when the database answers."""
    return api.health(ctx)
