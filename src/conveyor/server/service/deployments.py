"""Deployments, addressed as ``FLOW/NAME``: create or update, with every revision kept.

A PUT whose content equals the current revision changes nothing and returns it as it is; any
difference (code version, entrypoint, source, parameters, pool, ...) makes revision ``n + 1``
and stores a `DeploymentVersionRow` with the whole configuration.

Before anything is stored, the source spec is rebuilt with its source class (as a worker will
rebuild it), so a spec the worker would refuse — a branch like ``-x``, a URL with a password — is
a 422 now rather than a failed run later. A kind this server cannot import (an extra or a plugin
installed only on workers) is left to the workers.

Default values of secret parameters (``SecretStr``) are stored sealed, in the deployment and in
its kept revisions (`conveyor.server.service.sealed`), and shown as ``****``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor._values import displayable_fields
from conveyor.errors import ConfigError, InvalidRequest, MissingDependency, ObjectNotFound
from conveyor.schemas import Deployment, DeploymentCreate, DeploymentVersion
from conveyor.server.limits import check_parameters_size
from conveyor.server.secrets import SecretBox
from conveyor.server.service.pools import require_pool
from conveyor.server.service.sealed import masked, seal, unseal
from conveyor.server.tables import DeploymentRow, DeploymentVersionRow
from conveyor.settings import Settings

__all__ = [
    "check_source",
    "find_deployment",
    "get_deployment",
    "list_deployment_versions",
    "list_deployments",
    "put_deployment",
]

logger = logging.getLogger(__name__)

_FIELDS = tuple(DeploymentCreate.model_fields)


def put_deployment(
    session: Session,
    body: DeploymentCreate,
    *,
    box: SecretBox,
    now: datetime,
    settings: Settings | None = None,
) -> Deployment:
    """Create the deployment, or update it when anything differs from its current revision
    (secret defaults compared by value, stored sealed with ``box``)."""
    check_source(body.source)
    if settings is not None:
        check_parameters_size(body.parameters, settings, what="the default parameters")
    require_pool(session, body.work_pool)
    config = body.model_dump(mode="json")
    row = session.scalars(
        select(DeploymentRow)
        .where(DeploymentRow.flow_name == body.flow_name, DeploymentRow.name == body.name)
        .with_for_update()
    ).first()
    if row is not None and _unsealed_config(box, row) == config:
        sealed = seal(box, row.parameter_schema, row.parameters)
        if sealed != row.parameters:  # stored before secrets were sealed: seal them now
            row.parameters = sealed
            session.flush()
        return deployment_model(row)
    config["parameters"] = seal(box, body.parameter_schema, config["parameters"])
    if row is None:
        row = DeploymentRow(id=str(uuid.uuid4()), revision=1, created=now, updated=now, **config)
        session.add(row)
    else:
        for field, value in config.items():
            setattr(row, field, value)
        row.revision += 1
        row.updated = now
    session.add(
        DeploymentVersionRow(
            deployment_id=row.id,
            revision=row.revision,
            version=row.version,
            entrypoint=row.entrypoint,
            source=row.source,
            config=config,
            created=now,
        )
    )
    session.flush()
    return deployment_model(row)


def check_source(spec: dict[str, Any]) -> None:
    """422 when the source class refuses ``spec`` (see the module docstring)."""
    from conveyor.sources import SOURCES, source_from_spec

    if spec.get("kind") not in SOURCES:
        return
    try:
        source_from_spec(dict(spec))
    except MissingDependency:
        return
    except ConfigError as exc:
        raise InvalidRequest(f"source: {exc.message}", status_code=422, hint=exc.hint) from None
    except Exception as exc:  # a class this server cannot build: the workers will say why
        logger.debug("source not checked kind=%s reason=%s", spec.get("kind"), exc)


def find_deployment(session: Session, flow_name: str, name: str) -> DeploymentRow:
    """The deployment row, or 404 with a hint."""
    row = session.scalars(
        select(DeploymentRow).where(
            DeploymentRow.flow_name == flow_name, DeploymentRow.name == name
        )
    ).first()
    if row is None:
        raise ObjectNotFound(
            f"deployment '{flow_name}/{name}' not found",
            status_code=404,
            hint="conveyor deployments ls",
        )
    return row


def get_deployment(session: Session, flow_name: str, name: str) -> Deployment:
    return deployment_model(find_deployment(session, flow_name, name))


def list_deployments(session: Session) -> list[Deployment]:
    rows = session.scalars(
        select(DeploymentRow).order_by(DeploymentRow.flow_name, DeploymentRow.name)
    )
    return [deployment_model(row) for row in rows]


def list_deployment_versions(
    session: Session, flow_name: str, name: str
) -> list[DeploymentVersion]:
    """Every revision, newest first."""
    row = find_deployment(session, flow_name, name)
    versions = session.scalars(
        select(DeploymentVersionRow)
        .where(DeploymentVersionRow.deployment_id == row.id)
        .order_by(DeploymentVersionRow.revision.desc())
    )
    return [
        DeploymentVersion(
            revision=v.revision,
            version=v.version,
            entrypoint=v.entrypoint,
            source=v.source,
            created=v.created,
        )
        for v in versions
    ]


def deployment_model(row: DeploymentRow) -> Deployment:
    """The API model of ``row`` (secret defaults ``****``); a stored value that cannot be
    rendered is shown cleaned."""
    shown = _config(row)
    shown["parameters"] = masked(row.parameter_schema, row.parameters)
    config, replaced = displayable_fields(shown)
    if replaced:
        logger.warning("deployment shown cleaned id=%s fields=%s", row.id, ",".join(replaced))
    return Deployment(
        id=row.id, revision=row.revision, created=row.created, updated=row.updated, **config
    )


def _config(row: DeploymentRow) -> dict[str, Any]:
    return {field: getattr(row, field) for field in _FIELDS}


def _unsealed_config(box: SecretBox, row: DeploymentRow) -> dict[str, Any]:
    """The current revision's `DeploymentCreate` as given (secret defaults decrypted)."""
    where = f"deployment {row.flow_name}/{row.name}"
    return {**_config(row), "parameters": unseal(box, row.parameters, where=where)}
