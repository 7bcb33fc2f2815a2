"""``/api/secrets``: set, list (names only), read one value (for workers), delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from conveyor.schemas import SecretInfo, SecretPut, SecretValue
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["secrets"])


@router.put("/secrets/{name}")
def put_secret(name: str, body: SecretPut, ctx: Ctx) -> SecretInfo:
    return api.put_secret(ctx, name, body.value)


@router.get("/secrets")
def list_secrets(ctx: Ctx) -> list[SecretInfo]:
    return api.list_secrets(ctx)


@router.get("/secrets/{name}/value")
def get_secret_value(name: str, ctx: Ctx) -> SecretValue:
    return api.get_secret_value(ctx, name)


@router.delete("/secrets/{name}", status_code=204)
def delete_secret(name: str, ctx: Ctx) -> Response:
    api.delete_secret(ctx, name)
    return Response(status_code=204)
