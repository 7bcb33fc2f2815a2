"""Work pools: named queues of runs. Pool ``default`` is created by the first migration."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.errors import InvalidRequest, ObjectNotFound
from conveyor.schemas import Pool, PoolCreate
from conveyor.server.tables import PoolRow

__all__ = ["create_pool", "list_pools", "require_pool"]

POOL_TYPES = frozenset({"process", "dask", "docker", "kubernetes"})


def create_pool(session: Session, body: PoolCreate, *, now: datetime) -> Pool:
    """A new pool; 409 if one by that name exists."""
    if body.type not in POOL_TYPES:
        raise InvalidRequest(
            f"unknown pool type {body.type!r}",
            status_code=422,
            hint=f"use one of: {', '.join(sorted(POOL_TYPES))}",
        )
    if session.get(PoolRow, body.name) is not None:
        raise InvalidRequest(f"pool {body.name!r} already exists", status_code=409)
    row = PoolRow(
        name=body.name,
        type=body.type,
        description=body.description,
        created=now,
        base_job_template=body.base_job_template,
    )
    session.add(row)
    return _model(row)


def list_pools(session: Session) -> list[Pool]:
    """Every pool, by name."""
    rows = session.scalars(select(PoolRow).order_by(PoolRow.name))
    return [_model(row) for row in rows]


def require_pool(session: Session, name: str) -> PoolRow:
    """The pool called ``name``, or 404 with a hint."""
    row = session.get(PoolRow, name)
    if row is None:
        raise ObjectNotFound(
            f"work pool {name!r} not found",
            status_code=404,
            hint=f"create it with `conveyor pool create {name} --type process`",
        )
    return row


def _model(row: PoolRow) -> Pool:
    from conveyor._jobs import default_template

    template = row.base_job_template or default_template(row.type)
    return Pool(
        name=row.name,
        type=row.type,
        description=row.description,
        created=row.created,
        base_job_template=template,
    )
