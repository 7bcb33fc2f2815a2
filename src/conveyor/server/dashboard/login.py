"""``/login`` and ``/logout``: the API key exchanged for a session cookie (see `auth`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from conveyor.server.dashboard.pages import SECURITY_HEADERS, PublicPageRoute, dashboard_of

__all__ = ["router", "safe_next"]

router = APIRouter(route_class=PublicPageRoute, include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    dashboard = dashboard_of(request)
    if not dashboard.guard.login_required or dashboard.guard.signed_in(request):
        return RedirectResponse(safe_next(next), status_code=303, headers={**SECURITY_HEADERS})
    return dashboard.render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    dashboard = dashboard_of(request)
    form = await request.form()
    key, target = form.get("api_key"), safe_next(str(form.get("next") or ""))
    if not isinstance(key, str) or not key:
        return dashboard.render(
            request, "login.html", status=400, next=target, error="enter the server's API key"
        )
    if not dashboard.guard.key_matches(key):
        return dashboard.render(
            request,
            "login.html",
            status=401,
            next=target,
            error="wrong API key: use the CONVEYOR_API_KEY the server was started with",
        )
    response = RedirectResponse(target, status_code=303, headers={**SECURITY_HEADERS})
    dashboard.guard.set_session(response, request)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303, headers={**SECURITY_HEADERS})
    dashboard_of(request).guard.clear_session(response)
    return response
