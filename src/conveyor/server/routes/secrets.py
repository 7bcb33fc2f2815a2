"""``/api/secrets``: set, list (names only), read one value (for workers), delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from conveyor.schemas import SecretInfo, SecretPut, SecretValue
from conveyor.server.db import utcnow
from conveyor.server.routes import Ctx
from conveyor.server.service import secrets

__all__ = ["router"]

router = APIRouter(tags=["secrets"])


@router.put("/secrets/{name}")
def put_secret(name: str, body: SecretPut, ctx: Ctx) -> SecretInfo:
    return ctx.db.write(lambda s: secrets.put_secret(s, ctx.box, name, body.value, now=utcnow()))


@router.get("/secrets")
def list_secrets(ctx: Ctx) -> list[SecretInfo]:
    return ctx.db.read(secrets.list_secrets)


@router.get("/secrets/{name}/value")
def get_secret_value(name: str, ctx: Ctx) -> SecretValue:
    return ctx.db.read(lambda s: secrets.get_secret_value(s, ctx.box, name))


@router.delete("/secrets/{name}", status_code=204)
def delete_secret(name: str, ctx: Ctx) -> Response:
    ctx.db.write(lambda s: secrets.delete_secret(s, name))
    return Response(status_code=204)
