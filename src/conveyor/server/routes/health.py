"""``GET /api/health``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from conveyor import __version__
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Ctx) -> dict[str, str]:
    """``ok`` when the database answers."""
    ctx.db.read(lambda s: s.execute(text("SELECT 1")).scalar_one())
    return {"status": "ok", "version": __version__, "database": ctx.db.dialect}
