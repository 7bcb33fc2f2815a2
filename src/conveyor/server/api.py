"""The API's operations over a `ServerContext`, shared by both front ends.

Each function is one endpoint of `conveyor.schemas`' table: it opens the transaction, calls the
service layer, and does what the endpoint does around it (the lazy lease sweep, ringing the
doorbell for waiting claims). Two front ends call them and nothing else:

- the HTTP routes (`conveyor.server.routes`, FastAPI), served by ``conveyor server start``;
- `conveyor.server.local.LocalTransport`, the embedded default, which dispatches a request
  straight here without importing FastAPI (so a command line call costs a SQLite query, not
  building a web application).

Errors are `ApiError`s carrying their status; `conveyor.server.errors` turns any exception into
the one-line ``{"detail", "hint"}`` body both front ends answer with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor._version import __version__
from conveyor.errors import InvalidRequest
from conveyor.schemas import (
    ClaimRequest,
    Deployment,
    DeploymentCreate,
    DeploymentVersion,
    LogLine,
    LogRecord,
    Pool,
    PoolCreate,
    Run,
    RunCreate,
    RunHeartbeat,
    RunHeartbeatReply,
    RunParameters,
    RunParametersRequest,
    RunState,
    RunWatch,
    SecretInfo,
    SecretValue,
    StateUpdate,
    Worker,
    WorkerHeartbeat,
)
from conveyor.server.context import ServerContext
from conveyor.server.db import utcnow
from conveyor.server.limits import check_log_batch
from conveyor.server.service import (
    bundles,
    claims,
    deployments,
    logs,
    pools,
    runs,
    secrets,
    workers,
)

__all__ = [
    "MAX_WAIT",
    "bundle_exists",
    "cancel_run",
    "claim_blocking",
    "claim_once",
    "claim_wait_seconds",
    "create_pool",
    "create_run",
    "delete_secret",
    "get_deployment",
    "get_run",
    "get_secret_value",
    "health",
    "heartbeat_run",
    "list_deployment_versions",
    "list_deployments",
    "list_pools",
    "list_runs",
    "list_secrets",
    "list_workers",
    "open_bundle",
    "put_bundle",
    "put_deployment",
    "put_secret",
    "read_logs",
    "reclaim",
    "require_pool",
    "run_parameters",
    "set_run_state",
    "watch_run",
    "worker_heartbeat",
    "write_logs",
]

MAX_WAIT = 60.0
"""The longest a claim waits for a run, whatever ``wait_seconds`` asks."""


def health(ctx: ServerContext) -> dict[str, str]:
    """``ok`` when the database answers."""
    ctx.db.read(lambda s: s.execute(text("SELECT 1")).scalar_one())
    return {"status": "ok", "version": __version__, "database": ctx.db.dialect}


# -- pools ----------------------------------------------------------------------------------------


def create_pool(ctx: ServerContext, body: PoolCreate) -> Pool:
    try:
        return ctx.db.write(lambda s: pools.create_pool(s, body, now=utcnow()))
    except IntegrityError as exc:  # created concurrently by another request
        raise InvalidRequest(f"pool {body.name!r} already exists", status_code=409) from exc


def list_pools(ctx: ServerContext) -> list[Pool]:
    return ctx.db.read(pools.list_pools)


def require_pool(ctx: ServerContext, pool: str) -> None:
    ctx.db.read(lambda s: pools.require_pool(s, pool))


# -- deployments ----------------------------------------------------------------------------------


def put_deployment(ctx: ServerContext, body: DeploymentCreate) -> Deployment:
    def put() -> Deployment:
        return ctx.db.write(
            lambda s: deployments.put_deployment(
                s, body, box=ctx.box, now=utcnow(), settings=ctx.settings
            )
        )

    try:
        return put()
    except IntegrityError:  # the same new deployment was created concurrently: now update it
        return put()


def list_deployments(ctx: ServerContext) -> list[Deployment]:
    return ctx.db.read(deployments.list_deployments)


def get_deployment(ctx: ServerContext, flow_name: str, name: str) -> Deployment:
    return ctx.db.read(lambda s: deployments.get_deployment(s, flow_name, name))


def list_deployment_versions(
    ctx: ServerContext, flow_name: str, name: str
) -> list[DeploymentVersion]:
    return ctx.db.read(lambda s: deployments.list_deployment_versions(s, flow_name, name))


# -- runs -----------------------------------------------------------------------------------------


def create_run(ctx: ServerContext, flow_name: str, name: str, body: RunCreate) -> Run:
    run = ctx.db.write(
        lambda s: runs.create_run(
            s, flow_name, name, body, box=ctx.box, now=utcnow(), settings=ctx.settings
        )
    )
    ctx.doorbell.ring()
    return run


def list_runs(
    ctx: ServerContext,
    *,
    deployment: str | None = None,
    state: RunState | None = None,
    pool: str | None = None,
    limit: int = 100,
) -> list[Run]:
    ctx.sweep()
    return ctx.db.read(
        lambda s: runs.list_runs(s, deployment=deployment, state=state, pool=pool, limit=limit)
    )


def get_run(ctx: ServerContext, run_id: str) -> Run:
    ctx.sweep()
    return ctx.db.read(lambda s: runs.get_run(s, run_id))


def cancel_run(ctx: ServerContext, run_id: str) -> Run:
    return ctx.db.write(lambda s: runs.cancel_run(s, run_id, now=utcnow()))


def write_logs(
    ctx: ServerContext,
    run_id: str,
    records: list[LogRecord],
    *,
    attempt: int | None = None,
    batch: int | None = None,
) -> None:
    """Store a batch of log lines; numbered (``attempt``, ``batch``) batches are stored once."""
    check_log_batch(records, ctx.settings)
    ctx.db.write(lambda s: logs.write_logs(s, run_id, records, attempt=attempt, batch=batch))


def read_logs(
    ctx: ServerContext, run_id: str, *, after: int = 0, limit: int = 1000
) -> list[LogLine]:
    return ctx.db.read(lambda s: logs.read_logs(s, run_id, after=after, limit=limit))


MAX_WATCH = 30.0
"""The longest a watch waits for news, whatever ``wait`` asks."""


def watch_run(
    ctx: ServerContext,
    run_id: str,
    *,
    after: int = 0,
    state: RunState | None = None,
    wait: float = 0.0,
) -> RunWatch:
    """The run and its lines after ``after``, once there are some or its state is no longer
    ``state`` (or ``wait`` seconds have passed): a watcher learns of the end at once."""
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WATCH)

    def look(s: Session) -> RunWatch:
        run = runs.get_run(s, run_id)
        lines = logs.read_logs(s, run.id, after=after, limit=1000)
        return RunWatch(run=run, logs=lines)

    if wait > 0:
        ctx.watch_changes()
    while True:
        ticket = ctx.doorbell.ticket()
        ctx.sweep()
        found = ctx.db.read(look)
        remaining = deadline - time.monotonic()
        if found.logs or found.run.state != state or remaining <= 0 or ctx.stopping:
            return found
        ctx.doorbell.wait_blocking(min(ctx.poll_seconds, remaining), since=ticket)


# -- what workers call ----------------------------------------------------------------------------


def claim_wait_seconds(body: ClaimRequest) -> float:
    """How long a claim may wait: ``wait_seconds`` within [0, `MAX_WAIT`]."""
    return min(max(body.wait_seconds, 0.0), MAX_WAIT)


def reclaim(ctx: ServerContext, pool: str, body: ClaimRequest) -> Run | None:
    """The run ``body.claim_id`` already took, if still pending for this worker (a plain read
    first: a claim id that took nothing costs no write). Both front ends ask at the start of a
    claim and once more before answering 204, so a re-presented claim never gets a 204 or
    another run."""
    claim_id = body.claim_id
    if claim_id is None or ctx.db.read(lambda s: claims.claimed_by(s, claim_id)) is None:
        return None
    return ctx.db.write(lambda s: claims.reclaim(s, pool, body, box=ctx.box, now=utcnow()))


def claim_once(ctx: ServerContext, pool: str, body: ClaimRequest) -> Run | None:
    """One attempt to claim a run (a plain read first: an idle poll takes no write lock)."""
    ctx.sweep()
    now = utcnow()
    if not ctx.db.read(lambda s: claims.claimable(s, pool, body.labels, now=now)):
        return None
    return ctx.db.write(lambda s: claims.claim_run(s, pool, body, box=ctx.box, now=utcnow()))


def claim_blocking(ctx: ServerContext, pool: str, body: ClaimRequest) -> Run | None:
    """`claim_once`, waiting in this thread up to ``wait_seconds`` for a run (the embedded
    front end; the HTTP route waits on its event loop instead)."""
    deadline = time.monotonic() + claim_wait_seconds(body)
    require_pool(ctx, pool)
    if deadline > time.monotonic():
        ctx.watch_changes()
    run = reclaim(ctx, pool, body)
    while run is None:
        ticket = ctx.doorbell.ticket()
        run = claim_once(ctx, pool, body)
        remaining = deadline - time.monotonic()
        if run is not None:
            break
        if remaining <= 0:
            return reclaim(ctx, pool, body)
        ctx.doorbell.wait_blocking(min(ctx.poll_seconds, remaining), since=ticket)
    return run


def heartbeat_run(ctx: ServerContext, run_id: str, body: RunHeartbeat) -> RunHeartbeatReply:
    ctx.sweep()
    return ctx.db.write(lambda s: claims.heartbeat_run(s, run_id, body, now=utcnow()))


def run_parameters(ctx: ServerContext, run_id: str, body: RunParametersRequest) -> RunParameters:
    return ctx.db.read(lambda s: claims.held_parameters(s, run_id, body, box=ctx.box))


def set_run_state(ctx: ServerContext, run_id: str, body: StateUpdate) -> Run:
    ctx.sweep()
    run = ctx.db.write(lambda s: claims.set_run_state(s, run_id, body, now=utcnow()))
    if run.state == RunState.SCHEDULED:  # a retry: wake waiting claims
        ctx.doorbell.ring()
    return run


def worker_heartbeat(ctx: ServerContext, body: WorkerHeartbeat) -> Worker:
    return ctx.db.write(lambda s: workers.worker_heartbeat(s, body, now=utcnow()))


def list_workers(ctx: ServerContext, *, pool: str | None = None) -> list[Worker]:
    now = utcnow()
    return ctx.db.read(lambda s: workers.list_workers(s, now=now, pool=pool))


# -- secrets --------------------------------------------------------------------------------------


def put_secret(ctx: ServerContext, name: str, value: str) -> SecretInfo:
    return ctx.db.write(lambda s: secrets.put_secret(s, ctx.box, name, value, now=utcnow()))


def list_secrets(ctx: ServerContext) -> list[SecretInfo]:
    return ctx.db.read(secrets.list_secrets)


def get_secret_value(ctx: ServerContext, name: str) -> SecretValue:
    return ctx.db.read(lambda s: secrets.get_secret_value(s, ctx.box, name))


def delete_secret(ctx: ServerContext, name: str) -> None:
    ctx.db.write(lambda s: secrets.delete_secret(s, name))


# -- bundles (the server's bundle store) ----------------------------------------------------------


def bundle_exists(ctx: ServerContext, version: str) -> bool:
    return bundles.exists(_bundle_root(ctx), version)


def open_bundle(ctx: ServerContext, version: str) -> tuple[Path, int]:
    """The archive of ``version`` and its size (404 when the store lacks it)."""
    return bundles.locate(_bundle_root(ctx), version)


def put_bundle(ctx: ServerContext, version: str, body: BinaryIO | Iterator[bytes]) -> bool:
    """Store an uploaded archive after checking it holds exactly ``version``; False when the
    store had it already."""
    return bundles.put(_bundle_root(ctx), version, body, max_bytes=ctx.settings.max_bundle_bytes)


def _bundle_root(ctx: ServerContext) -> Path:
    return ctx.settings.storage_dir
