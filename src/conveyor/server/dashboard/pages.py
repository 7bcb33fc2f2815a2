"""The dashboard's page machinery: templates, the route class every page uses, error pages.

- `Dashboard` (one per app, at ``app.state.dashboard``): the `ServerContext`, the `Guard`, and a
  Jinja2 environment that autoescapes everything (flow names, parameters and logs are untrusted;
  nothing is marked safe except markup built here from escaped parts).
- `PageRoute`: the route class of every page. Before the endpoint runs it sends a visitor who is
  not signed in to ``/login?next=...`` (a 401 with ``HX-Redirect`` for htmx requests), and refuses
  a POST without a valid CSRF token (403). A `ConveyorError` from the endpoint becomes an error
  page with its one-line message and hint (its HTTP status for API errors, 500 otherwise); any
  other exception (a bug) is logged and becomes a 500 page too.
- `Dashboard.render`: a template to an `HTMLResponse` with the security headers (a strict
  Content-Security-Policy: scripts and styles only from ``/static``, no inline script) and the
  visitor's CSRF cookie.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from conveyor.errors import ApiError, ConveyorError
from conveyor.server.context import ServerContext
from conveyor.server.dashboard import fmt
from conveyor.server.dashboard.auth import CSRF_FIELD, Guard
from conveyor.server.db import utcnow
from conveyor.server.middleware import UNEXPECTED, UNEXPECTED_HINT

__all__ = ["SECURITY_HEADERS", "Dashboard", "PageRoute", "PublicPageRoute", "dashboard_of"]

logger = logging.getLogger(__name__)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Dashboard:
    """What every page needs: the server's context, the guard, the templates."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.guard = Guard.create(context.settings.api_key)
        self.env = Environment(
            loader=PackageLoader("conveyor.server.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(fmt.FILTERS)
        self.env.globals["qs"] = _query_string

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """``template`` rendered with ``values`` (plus ``csrf_token``, ``path``, ``now``...)."""
        nonce, new = self.guard.csrf_nonce(request)
        page = self.env.get_template(template).render(
            csrf_field=CSRF_FIELD,
            csrf_token=self.guard.csrf_token(nonce),
            login_required=self.guard.login_required,
            path=request.url.path,
            now=utcnow(),
            **values,
        )
        response = HTMLResponse(page, status_code=status, headers={**SECURITY_HEADERS})
        for name, value in (headers or {}).items():
            response.headers[name] = value
        if new:
            self.guard.set_csrf(response, request, nonce)
        return response

    def error(self, request: Request, status: int, message: str, hint: str | None) -> Response:
        return self.render(request, "error.html", status=status, message=message, hint=hint)


def dashboard_of(request: Request) -> Dashboard:
    dashboard = request.app.state.dashboard
    assert isinstance(dashboard, Dashboard)
    return dashboard


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """A dashboard page: sign-in and CSRF checked first; errors rendered as pages."""

    public: ClassVar[bool] = False

    def get_route_handler(self) -> Handler:
        endpoint = super().get_route_handler()
        public = self.public

        async def handle(request: Request) -> Response:
            dashboard = dashboard_of(request)
            guard = dashboard.guard
            if not public and not guard.signed_in(request):
                return _to_login(request)
            if request.method == "POST":
                form = await request.form()
                if not guard.csrf_ok(request, form.get(CSRF_FIELD)):
                    return dashboard.error(
                        request,
                        403,
                        "this form has expired or did not come from this dashboard",
                        "reload the page and submit the form again",
                    )
            try:
                return await endpoint(request)
            except ApiError as exc:
                return dashboard.error(request, exc.status_code or 400, exc.message, exc.hint)
            except ConveyorError as exc:
                logger.warning("dashboard page failed path=%s error=%s", request.url.path, exc)
                return dashboard.error(request, 500, exc.message, exc.hint)
            except RequestValidationError as exc:
                return dashboard.error(request, 400, _validation_message(exc), None)
            except Exception:  # a bug: its page, on a connection that stays open
                logger.exception("dashboard page failed unexpectedly path=%s", request.url.path)
                return dashboard.error(request, 500, UNEXPECTED, UNEXPECTED_HINT)

        return handle


class PublicPageRoute(PageRoute):
    """A page anyone may open (the login form): CSRF and error pages, no sign-in."""

    public = True


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login?" + urlencode({"next": target}) if target not in ("/", "") else "/login"
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": location, **SECURITY_HEADERS})
    return RedirectResponse(location, status_code=303, headers={**SECURITY_HEADERS})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _query_string(base: Mapping[str, Any], **changes: Any) -> str:
    """``?a=1&b=2``: ``base`` with ``changes`` applied, empty values left out."""
    merged = {**base, **changes}
    pairs = [(k, _text(v)) for k, v in merged.items() if v not in (None, "")]
    return "?" + urlencode(pairs) if pairs else "?"


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
