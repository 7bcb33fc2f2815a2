"""``/api/pools``: create and list work pools."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from conveyor.errors import InvalidRequest
from conveyor.schemas import Pool, PoolCreate
from conveyor.server.db import utcnow
from conveyor.server.routes import Ctx
from conveyor.server.service import pools

__all__ = ["router"]

router = APIRouter(tags=["pools"])


@router.post("/pools", status_code=201)
def create_pool(body: PoolCreate, ctx: Ctx) -> Pool:
    try:
        return ctx.db.write(lambda s: pools.create_pool(s, body, now=utcnow()))
    except IntegrityError as exc:  # created concurrently by another request
        raise InvalidRequest(f"pool {body.name!r} already exists", status_code=409) from exc


@router.get("/pools")
def list_pools(ctx: Ctx) -> list[Pool]:
    return ctx.db.read(pools.list_pools)
