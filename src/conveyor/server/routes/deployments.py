"""``/api/deployments``: create-or-update by ``flow/name``, list, inspect, revisions."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from conveyor.schemas import Deployment, DeploymentCreate, DeploymentVersion
from conveyor.server.db import utcnow
from conveyor.server.routes import Ctx
from conveyor.server.service import deployments

__all__ = ["router"]

router = APIRouter(tags=["deployments"])


@router.put("/deployments")
def put_deployment(body: DeploymentCreate, ctx: Ctx) -> Deployment:
    def put() -> Deployment:
        return ctx.db.write(
            lambda s: deployments.put_deployment(s, body, now=utcnow(), settings=ctx.settings)
        )

    try:
        return put()
    except IntegrityError:  # the same new deployment was created concurrently: now update it
        return put()


@router.get("/deployments")
def list_deployments(ctx: Ctx) -> list[Deployment]:
    return ctx.db.read(deployments.list_deployments)


@router.get("/deployments/{flow_name}/{name}")
def get_deployment(flow_name: str, name: str, ctx: Ctx) -> Deployment:
    return ctx.db.read(lambda s: deployments.get_deployment(s, flow_name, name))


@router.get("/deployments/{flow_name}/{name}/versions")
def list_deployment_versions(flow_name: str, name: str, ctx: Ctx) -> list[DeploymentVersion]:
    return ctx.db.read(lambda s: deployments.list_deployment_versions(s, flow_name, name))
