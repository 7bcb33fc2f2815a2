"""``/api/deployments``: create-or-update by ``flow/name``, list, inspect, revisions."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.schemas import Deployment, DeploymentCreate, DeploymentVersion
from conveyor.server import api
from conveyor.server.routes import Ctx

__all__ = ["router"]

router = APIRouter(tags=["deployments"])


@router.put("/deployments")
def put_deployment(body: DeploymentCreate, ctx: Ctx) -> Deployment:
    return api.put_deployment(ctx, body)


@router.get("/deployments")
def list_deployments(ctx: Ctx) -> list[Deployment]:
    return api.list_deployments(ctx)


@router.get("/deployments/{flow_name}/{name}")
def get_deployment(flow_name: str, name: str, ctx: Ctx) -> Deployment:
    return api.get_deployment(ctx, flow_name, name)


@router.get("/deployments/{flow_name}/{name}/versions")
def list_deployment_versions(flow_name: str, name: str, ctx: Ctx) -> list[DeploymentVersion]:
    return api.list_deployment_versions(ctx, flow_name, name)
