"""The web dashboard, served by the API's own app at ``/`` (the API stays under ``/api``).

Server-rendered Jinja2 pages over the server's service layer (no HTTP calls to itself), with
htmx (vendored in ``static/``, with its licence) for the one live part: a run's logs. Pages work
without JavaScript, then refreshing while a run is live.

| path | page |
|---|---|
| ``/login``, ``/logout`` | sign-in with the API key (only when the server has one) |
| ``/deployments``, ``/deployments/<flow>/<name>`` | deployments; one, its revisions, run form |
| ``/runs``, ``/runs/<id>`` | filterable run list; one run with its live logs |
| ``/runs/<id>/code...``, ``/code/diff`` | the exact code a run used; diffs of two trees |
| ``/workers``, ``/pools``, ``/secrets`` | workers, pools, secrets and credentials |

`mount_dashboard` is all `create_app` calls. Sign-in and CSRF: `auth`; page plumbing: `pages`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from conveyor.server.context import ServerContext

__all__ = ["mount_dashboard"]

STATIC = Path(__file__).with_name("static")


def mount_dashboard(app: FastAPI, context: ServerContext) -> None:
    """Add the dashboard's pages and static files to ``app``."""
    from conveyor.server.dashboard import admin, code_pages, deployments, login, runs
    from conveyor.server.dashboard.codeview import highlight_css
    from conveyor.server.dashboard.pages import Dashboard

    app.state.dashboard = Dashboard(context)

    @app.get("/static/highlight.css", include_in_schema=False)
    def highlight_stylesheet() -> Response:
        return Response(
            highlight_css(),
            media_type="text/css",
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")
    for module in (login, runs, deployments, code_pages, admin):
        app.include_router(module.router)
