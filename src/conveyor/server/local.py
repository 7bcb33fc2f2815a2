"""`LocalTransport`: the embedded default, an httpx transport that answers in this process.

With no server configured, `conveyor.connect.connect` gives the client this transport: each
request is matched against `ROUTES` (the same method and path table the HTTP API serves; a test
checks the two agree) and dispatched straight to `conveyor.server.api` over a `ServerContext`
on the local database. Nothing of FastAPI or Starlette is imported, no ASGI app is built, and the
schema is checked with one query against `migrate.HEAD` (migrations run only when it differs),
so a command line call costs little more than the SQLite query it makes.

Requests and answers are the HTTP API's own: JSON bodies validated by the same pydantic models,
the same status codes, errors through `conveyor.server.errors.error_response`. So the client
behaves the same whichever transport it has.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
from pydantic import BaseModel, TypeAdapter

from conveyor._values import value_problem
from conveyor.errors import InvalidRequest
from conveyor.schemas import (
    ClaimRequest,
    DeploymentCreate,
    LogRecord,
    PoolCreate,
    RunCreate,
    RunHeartbeat,
    RunParametersRequest,
    RunState,
    SecretPut,
    StateUpdate,
    WorkerHeartbeat,
)
from conveyor.server import api
from conveyor.server.context import ServerContext
from conveyor.server.errors import error_response
from conveyor.server.limits import check_body_size
from conveyor.settings import Settings

__all__ = ["ROUTES", "LocalTransport", "Route"]

logger = logging.getLogger(__name__)

Handler = Callable[["_Request"], Any]


@dataclass(frozen=True)
class _Request:
    ctx: ServerContext
    params: dict[str, str]
    query: dict[str, str]
    body: bytes

    def decoded(self, empty: str = "{}") -> Any:
        """The JSON body, parsed as the HTTP front end parses it (Python's ``json``, then the
        models' validation, so both front ends accept and refuse the same text)."""
        try:
            return json.loads(self.body or empty)
        except (ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidRequest(
                f"invalid request: JSON decode error: {reason}", status_code=422
            ) from None

    def json(self, model: type[BaseModel]) -> Any:
        return model.model_validate(self.decoded())

    def optional_int(self, name: str, *, low: int) -> int | None:
        return None if name not in self.query else self.int_query(name, low, low=low)

    def int_query(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidRequest(
                f"invalid request: {name}: not an integer: {raw[:40]!r}", status_code=422
            ) from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise InvalidRequest(f"invalid request: {name}: must be {bound}", status_code=422)
        return value


@dataclass(frozen=True)
class Route:
    """``METHOD /api/path/{param}`` → handler, and the status of a successful answer."""

    method: str
    path: str
    handler: Handler
    status: int = 200

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        return re.compile(f"^{regex}$")


_LOG_RECORDS: TypeAdapter[list[LogRecord]] = TypeAdapter(list[LogRecord])


def _state(raw: str | None) -> RunState | None:
    if raw is None:
        return None
    try:
        return RunState(raw)
    except ValueError:
        known = ", ".join(s.value for s in RunState)
        raise InvalidRequest(
            f"invalid request: state: {raw[:40]!r} is not one of {known}", status_code=422
        ) from None


def _list_runs(r: _Request) -> Any:
    return api.list_runs(
        r.ctx,
        deployment=r.query.get("deployment"),
        state=_state(r.query.get("state")),
        pool=r.query.get("pool"),
        limit=r.int_query("limit", 100, low=1, high=1000),
    )


def _write_logs(r: _Request) -> None:
    api.write_logs(
        r.ctx,
        r.params["run_id"],
        _LOG_RECORDS.validate_python(r.decoded("[]")),
        attempt=r.optional_int("attempt", low=1),
        batch=r.optional_int("batch", low=1),
    )


def _read_logs(r: _Request) -> Any:
    return api.read_logs(
        r.ctx,
        r.params["run_id"],
        after=r.int_query("after", 0, low=0),
        limit=r.int_query("limit", 1000, low=1, high=10_000),
    )


def _watch_run(r: _Request) -> Any:
    raw = r.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidRequest(
            f"invalid request: wait: not a number: {raw[:40]!r}", status_code=422
        ) from None
    if not 0 <= wait <= api.MAX_WATCH:
        raise InvalidRequest(
            f"invalid request: wait: must be between 0 and {api.MAX_WATCH:g}", status_code=422
        )
    return api.watch_run(
        r.ctx,
        r.params["run_id"],
        after=r.int_query("after", 0, low=0),
        state=_state(r.query.get("state")),
        wait=wait,
    )


def _put_bundle(r: _Request) -> int:
    return 201 if api.put_bundle(r.ctx, r.params["version"], iter([r.body])) else 200


def _get_bundle(r: _Request) -> Any:
    path, _size = api.open_bundle(r.ctx, r.params["version"])
    return _File(path.read_bytes())


@dataclass(frozen=True)
class _File:
    content: bytes


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", lambda r: api.health(r.ctx)),
    Route("POST", "/api/pools", lambda r: api.create_pool(r.ctx, r.json(PoolCreate)), 201),
    Route("GET", "/api/pools", lambda r: api.list_pools(r.ctx)),
    Route("PUT", "/api/deployments", lambda r: api.put_deployment(r.ctx, r.json(DeploymentCreate))),
    Route("GET", "/api/deployments", lambda r: api.list_deployments(r.ctx)),
    Route(
        "GET",
        "/api/deployments/{flow_name}/{name}",
        lambda r: api.get_deployment(r.ctx, r.params["flow_name"], r.params["name"]),
    ),
    Route(
        "GET",
        "/api/deployments/{flow_name}/{name}/versions",
        lambda r: api.list_deployment_versions(r.ctx, r.params["flow_name"], r.params["name"]),
    ),
    Route(
        "POST",
        "/api/deployments/{flow_name}/{name}/runs",
        lambda r: api.create_run(r.ctx, r.params["flow_name"], r.params["name"], r.json(RunCreate)),
        201,
    ),
    Route("GET", "/api/runs", _list_runs),
    Route("GET", "/api/runs/{run_id}", lambda r: api.get_run(r.ctx, r.params["run_id"])),
    Route("POST", "/api/runs/{run_id}/cancel", lambda r: api.cancel_run(r.ctx, r.params["run_id"])),
    Route("POST", "/api/runs/{run_id}/logs", _write_logs, 204),
    Route("GET", "/api/runs/{run_id}/logs", _read_logs),
    Route("GET", "/api/runs/{run_id}/watch", _watch_run),
    Route(
        "POST",
        "/api/pools/{pool}/claim",
        lambda r: api.claim_blocking(r.ctx, r.params["pool"], r.json(ClaimRequest)),
    ),
    Route(
        "POST",
        "/api/runs/{run_id}/heartbeat",
        lambda r: api.heartbeat_run(r.ctx, r.params["run_id"], r.json(RunHeartbeat)),
    ),
    Route(
        "POST",
        "/api/runs/{run_id}/parameters",
        lambda r: api.run_parameters(r.ctx, r.params["run_id"], r.json(RunParametersRequest)),
    ),
    Route(
        "POST",
        "/api/runs/{run_id}/state",
        lambda r: api.set_run_state(r.ctx, r.params["run_id"], r.json(StateUpdate)),
    ),
    Route(
        "POST",
        "/api/workers/heartbeat",
        lambda r: api.worker_heartbeat(r.ctx, r.json(WorkerHeartbeat)),
    ),
    Route("GET", "/api/workers", lambda r: api.list_workers(r.ctx, pool=r.query.get("pool"))),
    Route(
        "PUT",
        "/api/secrets/{name}",
        lambda r: api.put_secret(r.ctx, r.params["name"], r.json(SecretPut).value),
    ),
    Route("GET", "/api/secrets", lambda r: api.list_secrets(r.ctx)),
    Route(
        "GET", "/api/secrets/{name}/value", lambda r: api.get_secret_value(r.ctx, r.params["name"])
    ),
    Route(
        "DELETE", "/api/secrets/{name}", lambda r: api.delete_secret(r.ctx, r.params["name"]), 204
    ),
    Route(
        "HEAD",
        "/api/bundles/{version}",
        lambda r: 200 if api.bundle_exists(r.ctx, r.params["version"]) else 404,
    ),
    Route("GET", "/api/bundles/{version}", _get_bundle),
    Route("PUT", "/api/bundles/{version}", _put_bundle),
)


class LocalTransport(httpx.BaseTransport):
    """Serves the API's requests in this process over ``settings``' database (see the module).
    A ``CONVEYOR_SECRET_KEY`` its server context would refuse is refused here, at once
    (`conveyor.server.secrets.check_key`), rather than as a failed request later."""

    def __init__(self, settings: Settings) -> None:
        from conveyor.server.secrets import check_key

        check_key(settings.secret_key)
        self.settings = settings
        self._context: ServerContext | None = None
        self._lock = threading.Lock()
        self._compiled = [(route, route.pattern) for route in ROUTES]

    def describe(self) -> str:
        from conveyor.secrets import redact_url

        return f"embedded:{redact_url(self.settings.effective_database_url)}"

    @property
    def context(self) -> ServerContext:
        """The server context, built (and the schema checked) on first use."""
        if self._context is None:
            with self._lock:
                if self._context is None:
                    self._context = _build_context(self.settings)
        return self._context

    def close(self) -> None:
        with self._lock:
            context, self._context = self._context, None
        if context is not None:
            context.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.raw_path.split(b"?", 1)[0].decode("ascii"))
        try:
            route, params = self._match(request.method, request.url.raw_path)
            status, payload = self._dispatch(route, params, request)
        except BaseException as exc:  # every error becomes the API's error answer
            answer = error_response(exc)
            if answer is None:
                if not isinstance(exc, Exception):
                    raise
                logger.exception("embedded request failed method=%s path=%s", request.method, path)
                answer = (500, {"detail": "internal error", "hint": None})
            status, body = answer
            return httpx.Response(status, json=body, request=request)
        if isinstance(payload, _File):
            return httpx.Response(
                status,
                content=payload.content,
                headers={"content-type": "application/zstd"},
                request=request,
            )
        if status == 204 or payload is None or request.method == "HEAD":
            return httpx.Response(status, request=request)
        return httpx.Response(
            status,
            content=_encode(payload),
            request=request,
            headers={"content-type": "application/json"},
        )

    def _match(self, method: str, raw_path: bytes) -> tuple[Route, dict[str, str]]:
        path_text = raw_path.split(b"?", 1)[0].decode("ascii")
        allowed = False
        for route, pattern in self._compiled:
            match = pattern.match(path_text)
            if match is None:
                continue
            if route.method != method:
                allowed = True
                continue
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
        if allowed:
            raise InvalidRequest(f"{method} is not allowed on {path_text}", status_code=405)
        from conveyor.errors import ObjectNotFound

        raise ObjectNotFound("Not Found", status_code=404)

    def _dispatch(
        self, route: Route, params: dict[str, str], request: httpx.Request
    ) -> tuple[int, Any]:
        query = {k: v for k, v in request.url.params.multi_items()}
        problem = value_problem([*params.values(), *query.values()])
        if problem is not None:  # as the HTTP front end: a NUL in a URL never reaches the db
            raise InvalidRequest(
                f"invalid request: URL: {problem.message}", status_code=422, hint=problem.hint
            )
        body = request.read()
        if not route.path.startswith("/api/bundles"):
            check_body_size(len(body), self.settings)
        result = route.handler(_Request(self.context, params, query, body))
        if route.method == "HEAD" or (
            route.path.startswith("/api/bundles") and route.method == "PUT"
        ):
            return int(result), None
        if route.path.endswith("/claim") and result is None:
            return 204, None
        return route.status, result


def _encode(payload: Any) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    if isinstance(payload, list) and payload and isinstance(payload[0], BaseModel):
        return ("[" + ",".join(item.model_dump_json() for item in payload) + "]").encode()
    return json.dumps(payload).encode()


def _build_context(settings: Settings) -> ServerContext:
    from conveyor.server.db import Database
    from conveyor.server.migrate import ensure_schema
    from conveyor.server.secrets import SecretBox

    box = SecretBox(key=settings.secret_key, home=settings.home)
    db = Database(settings.effective_database_url)
    ensure_schema(db)
    return ServerContext(
        settings=settings,
        db=db,
        box=box,
        start_grace=False,  # every process is its own server: see conveyor.server.context
    )
