"""``/api/pools``: create and list work pools."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.schemas import Pool, PoolCreate
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["pools"])


@router.post("/pools", status_code=201)
def create_pool(body: PoolCreate, ctx: Ctx) -> Pool:
    return api.create_pool(ctx, body)


@router.get("/pools")
def list_pools(ctx: Ctx) -> list[Pool]:
    return api.list_pools(ctx)
