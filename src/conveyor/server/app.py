"""`create_app(settings)`: the Conveyor API as a FastAPI application.

No module-level app or engine: each call builds its own `Database`, brings it to the current
schema (migrations run here, before the first request), and wires the routes, the error
translation (every error body is ``{"detail": one line, "hint": ...}``) and, when
``CONVEYOR_API_KEY`` is set, the API-key check. Served by uvicorn (`conveyor server start`) or
in-process by the embedded client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor._version import __version__
from conveyor.errors import ApiError, ConveyorError
from conveyor.server.context import ServerContext
from conveyor.server.db import Database
from conveyor.server.errors import error_body, error_response, validation_message
from conveyor.server.middleware import BodyLimitMiddleware, UnexpectedErrorMiddleware
from conveyor.server.migrate import ensure_schema
from conveyor.server.secrets import SecretBox
from conveyor.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, sweep_every: float | None = 1.0, dashboard: bool = True
) -> FastAPI:
    """The API over ``settings.effective_database_url``, migrated to the current schema.

    ``sweep_every``: seconds between background lease-expiry sweeps while the app's lifespan
    runs (served by uvicorn); leases are also expired lazily on claims, heartbeats and reads.
    ``dashboard``: also serve the web dashboard at ``/`` (the in-process client does not).
    """
    from conveyor.server.routes import (
        bundles,
        claims,
        deployments,
        health,
        pools,
        runs,
        secrets,
        workers,
    )

    box = SecretBox(key=settings.secret_key, home=settings.home)  # a bad key: refused now
    db = Database(settings.effective_database_url)
    ensure_schema(db)
    context = ServerContext(settings=settings, db=db, box=box)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context.serving()  # leases get one lease of grace from now (see server.context)
        task = asyncio.create_task(_sweep_forever(context, sweep_every)) if sweep_every else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            context.close()

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.context = context
    for module in (health, pools, deployments, runs, claims, workers, secrets, bundles):
        app.include_router(module.router, prefix="/api")
    if dashboard:
        from conveyor.server.dashboard import mount_dashboard

        mount_dashboard(app, context)
    for kind in (ApiError, ConveyorError, DBAPIError, UnicodeEncodeError):
        app.add_exception_handler(kind, _error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key.reveal())
    app.add_middleware(UnexpectedErrorMiddleware)  # outermost: see its docstring
    return app


OPEN_PATHS = frozenset({"/api/health"})
"""Paths that answer without the API key (a load balancer's health probe)."""


class ApiKeyMiddleware:
    """401 for every API request whose ``X-API-Key`` header is not the server's key, except the
    health probe (the dashboard, outside ``/api``, signs people in with the same key: see
    `dashboard.auth`)."""

    def __init__(self, app: ASGIApp, *, key: str) -> None:
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path.startswith("/api") and path not in OPEN_PATHS:
            sent = b""
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    sent = value
                    break
            if not hmac.compare_digest(sent, self._key):
                response = JSONResponse(
                    {
                        "detail": "missing or wrong API key"
                        if sent
                        else "this server requires an API key",
                        "hint": "set CONVEYOR_API_KEY to the key the server was started with",
                    },
                    status_code=401,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _sweep_forever(context: ServerContext, every: float) -> None:
    """Expire leases every ``every`` seconds; this is also how the server notices a database
    outage (and gives leases their grace after it: `ServerContext.sweep`)."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(context.sweep, force=True)
        except DBAPIError:  # an outage: the context has logged it and pauses expiry
            if not context.database_down:
                logger.exception("lease sweep failed")
        except Exception:  # a sweep must never stop the server; the next one retries
            logger.exception("lease sweep failed")


async def _error(_request: Request, exc: Exception) -> JSONResponse:
    answer = error_response(exc)
    if answer is None:  # pragma: no cover - only registered for the types error_response knows
        raise exc
    status, body = answer
    return JSONResponse(body, status_code=status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, hint = validation_message(list(exc.errors()))
    return JSONResponse(error_body(message, hint), status_code=422)


def database_of(app: FastAPI) -> Database:
    """The app's database (for tests and tools)."""
    context = app.state.context
    assert isinstance(context, ServerContext)
    return context.db
