"""``/workers`` (heartbeats, labels, pools, running runs, code cache size and hit rate),
``/pools`` (type, job template, what is queued) and ``/secrets`` (secrets and credentials by
name and kind; create, replace, delete; values go in and never come back out)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from conveyor.errors import ConveyorError, InvalidRequest
from conveyor.server.dashboard import queries
from conveyor.server.dashboard.pages import SECURITY_HEADERS, PageRoute, dashboard_of
from conveyor.server.dashboard.secret_kinds import KINDS, build_value, kind_of
from conveyor.server.db import utcnow
from conveyor.server.service import pools, secrets, workers

__all__ = ["JOB_TEMPLATES", "router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)

_COMMON = {
    "env": {
        "type": "object",
        "default": {},
        "description": "environment of the flow process; "
        "values may be ${SECRET} templates, resolved on the worker",
    },
    "labels": {
        "type": "array",
        "default": [],
        "description": "labels a worker must have to claim the deployment's runs",
    },
}
JOB_TEMPLATES: dict[str, dict[str, Any]] = {
    "process": {"executor": "a child process of the worker", "variables": _COMMON},
    "dask": {"executor": "a task on a Dask cluster", "variables": _COMMON},
    "docker": {"executor": "a container", "variables": _COMMON},
    "kubernetes": {"executor": "a Kubernetes job", "variables": _COMMON},
}
"""The job variables each pool type understands (a deployment's ``job_variables`` fill them)."""


@router.get("/workers")
def worker_list(request: Request) -> Response:
    dashboard = dashboard_of(request)

    def read(session: Any) -> dict[str, Any]:
        return {
            "workers": workers.list_workers(session, now=utcnow()),
            "active": queries.active_runs_by_worker(session),
        }

    return dashboard.render(request, "workers.html", **dashboard.context.db.read(read))


@router.get("/pools")
def pool_list(request: Request) -> Response:
    dashboard = dashboard_of(request)

    def read(session: Any) -> dict[str, Any]:
        return {
            "pools": pools.list_pools(session),
            "figures": queries.pool_figures(session),
            "online": [
                w for w in workers.list_workers(session, now=utcnow()) if w.status == "online"
            ],
        }

    return dashboard.render(
        request, "pools.html", templates=JOB_TEMPLATES, **dashboard.context.db.read(read)
    )


def _secret_rows(request: Request) -> list[dict[str, Any]]:
    context = dashboard_of(request).context

    def read(session: Any) -> list[dict[str, Any]]:
        rows = []
        for info in secrets.list_secrets(session):
            value = None
            if info.name.startswith("credentials."):
                try:
                    value = secrets.get_secret_value(session, context.box, info.name).value
                except ConveyorError:  # not readable with this key: its kind is unknown
                    value = None
            rows.append({"info": info, "kind": kind_of(info.name, value)})
        return rows

    return context.db.read(read)


def _secrets_page(
    request: Request, *, status: int = 200, saved: str | None = None, **values: Any
) -> Response:
    """The secrets page; ``saved`` is confirmed only when it names a stored secret (it comes
    from the query string, which anyone can write into a link)."""
    values.setdefault("error", None)
    values.setdefault("hint", None)
    values.setdefault("chosen", "secret")
    values.setdefault("kept", {})
    rows = _secret_rows(request)
    stored = {row["info"].name for row in rows}
    return dashboard_of(request).render(
        request,
        "secrets.html",
        status=status,
        rows=rows,
        kinds=list(KINDS.values()),
        saved=saved if saved in stored else None,
        **values,
    )


@router.get("/secrets")
def secret_list(request: Request, saved: str | None = None) -> Response:
    return _secrets_page(request, saved=saved)


@router.post("/secrets")
async def secret_put(request: Request) -> Response:
    """Create or replace a secret or credentials; the value is never rendered back."""
    dashboard = dashboard_of(request)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    name, kind = form.get("name", "").strip(), form.get("kind", "secret")
    kept = {"name": name}
    if kind in KINDS:  # only the non-secret fields are shown again
        for f in KINDS[kind].fields:
            if not f.secret and not f.checkbox:
                kept[f"{kind}.{f.name}"] = form.get(f"{kind}.{f.name}", "")

    def put() -> str:
        if not name:
            raise InvalidRequest("a name is required", status_code=422)
        secret_name, value = build_value(kind, name, form)
        context = dashboard.context
        context.db.write(
            lambda s: secrets.put_secret(s, context.box, secret_name, value, now=utcnow())
        )
        return secret_name

    try:
        stored = await run_in_threadpool(put)
    except InvalidRequest as exc:
        problem = exc
    else:
        return RedirectResponse(
            "/secrets?" + urlencode({"saved": stored}),
            status_code=303,
            headers={**SECURITY_HEADERS},
        )
    return await run_in_threadpool(
        lambda: _secrets_page(
            request,
            status=problem.status_code or 422,
            error=problem.message,
            hint=problem.hint,
            chosen=kind,
            kept=kept,
        )
    )


@router.post("/secrets/{name}/delete")
def secret_delete(request: Request, name: str) -> Response:
    context = dashboard_of(request).context
    context.db.write(lambda s: secrets.delete_secret(s, name))
    return RedirectResponse("/secrets", status_code=303, headers={**SECURITY_HEADERS})
