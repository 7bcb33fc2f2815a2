"""``/deployments``: the list, one deployment (source, pinned version, revisions, parameters,
labels, pool, recent runs) and its run form, which creates a run through the API's own
`conveyor.server.api.create_run` (same validation and size limit, same wake-up of waiting claims)
as the HTTP API and the CLI."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from conveyor.errors import InvalidRequest
from conveyor.schemas import RunCreate
from conveyor.server import api
from conveyor.server.dashboard import queries
from conveyor.server.dashboard.fmt import url_segment
from conveyor.server.dashboard.forms import parameter_fields, parse_parameters
from conveyor.server.dashboard.pages import SECURITY_HEADERS, PageRoute, dashboard_of
from conveyor.server.service import deployments

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/deployments")
def deployment_list(request: Request) -> Response:
    dashboard = dashboard_of(request)
    found = dashboard.context.db.read(deployments.list_deployments)
    return dashboard.render(request, "deployments.html", deployments=found)


def _page_values(request: Request, flow_name: str, name: str) -> dict[str, Any]:
    def read(session: Any) -> dict[str, Any]:
        deployment = deployments.get_deployment(session, flow_name, name)
        return {
            "deployment": deployment,
            "revisions": deployments.list_deployment_versions(session, flow_name, name),
            "recent": queries.recent_runs(session, deployment.id),
        }

    return dict(dashboard_of(request).context.db.read(read))


@router.get("/deployments/{flow_name}/{name}")
def deployment_page(request: Request, flow_name: str, name: str) -> Response:
    values = _page_values(request, flow_name, name)
    deployment = values["deployment"]
    fields = parameter_fields(deployment.parameter_schema, deployment.parameters)
    return dashboard_of(request).render(
        request, "deployment.html", fields=fields, form_error=None, form_hint=None, **values
    )


@router.post("/deployments/{flow_name}/{name}/runs")
async def trigger_run(request: Request, flow_name: str, name: str) -> Response:
    dashboard = dashboard_of(request)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

    def create() -> str:
        deployment = dashboard.context.db.read(
            lambda s: deployments.get_deployment(s, flow_name, name)
        )
        parameters = parse_parameters(deployment.parameter_schema, form, deployment.parameters)
        run = api.create_run(dashboard.context, flow_name, name, RunCreate(parameters=parameters))
        return run.id

    try:
        run_id = await run_in_threadpool(create)
    except InvalidRequest as exc:
        if exc.status_code not in (413, 422):  # the form's own values: shown with the form
            raise
        values = await run_in_threadpool(_page_values, request, flow_name, name)
        fields = parameter_fields(
            values["deployment"].parameter_schema, values["deployment"].parameters, form
        )
        return dashboard.render(
            request,
            "deployment.html",
            status=exc.status_code,
            fields=fields,
            form_error=exc.message,
            form_hint=exc.hint,
            **values,
        )
    return RedirectResponse(
        f"/runs/{url_segment(run_id)}", status_code=303, headers={**SECURITY_HEADERS}
    )
