"""Size limits on what the server accepts (`Settings`: ``CONVEYOR_MAX_*``), each a clear 413.

- `BodyLimitMiddleware`: a request whose ``Content-Length`` is over ``max_request_bytes`` is
  refused before a byte of it is read; a body without a length (chunked) is read up to the limit
  and refused the moment it passes it. The app then gets the whole body at once, so nothing
  parses half a request.
- `check_parameters_size` (a run's parameters, a deployment's defaults) and `check_log_batch`
  (records per request, bytes per line): called by the routes and services before anything is
  stored.

Every refusal is ``{"detail": one line, "hint": which setting to raise}`` with status 413.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor._values import format_size, json_size
from conveyor.errors import InvalidRequest
from conveyor.schemas import LogRecord
from conveyor.settings import Settings

__all__ = ["BodyLimitMiddleware", "check_log_batch", "check_parameters_size"]

TOO_LARGE = 413


class BodyLimitMiddleware:
    """413 for a request body larger than ``max_bytes``, decided before the app parses it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect (long-polls use it)

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        limit = format_size(self.max_bytes)
        detail = (
            f"the request body is larger than the {limit} this server accepts"
            if size is None
            else f"the request body is {format_size(size)}; this server accepts at most {limit}"
        )
        response = JSONResponse(
            {
                "detail": detail,
                "hint": "send less (large data belongs in a file or blob store, passed by "
                "reference), or raise CONVEYOR_MAX_REQUEST_BYTES on the server",
            },
            status_code=TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def check_parameters_size(
    parameters: Mapping[str, Any], settings: Settings, *, what: str = "the run's parameters"
) -> None:
    """413 when ``parameters`` (storable JSON) are larger than ``max_parameters_bytes``."""
    size = json_size(parameters)
    if size > settings.max_parameters_bytes:
        raise InvalidRequest(
            f"{what} are {format_size(size)} as JSON; this server accepts at most "
            f"{format_size(settings.max_parameters_bytes)}",
            status_code=TOO_LARGE,
            hint="pass large data by reference (a path or URL the flow reads), or raise "
            "CONVEYOR_MAX_PARAMETERS_BYTES on the server",
        )


def check_log_batch(records: Sequence[LogRecord], settings: Settings) -> None:
    """413 when a batch has more than ``max_log_batch`` records or a line over
    ``max_log_line_bytes``."""
    if len(records) > settings.max_log_batch:
        raise InvalidRequest(
            f"{len(records)} log records in one request; this server accepts at most "
            f"{settings.max_log_batch}",
            status_code=TOO_LARGE,
            hint="send them in smaller batches, or raise CONVEYOR_MAX_LOG_BATCH on the server",
        )
    limit = settings.max_log_line_bytes
    for index, record in enumerate(records):
        if len(record.message) * 4 <= limit:  # no UTF-8 character is longer than 4 bytes
            continue
        size = len(record.message.encode("utf-8"))
        if size > limit:
            raise InvalidRequest(
                f"log record {index} is {format_size(size)}; this server accepts lines of at "
                f"most {format_size(limit)}",
                status_code=TOO_LARGE,
                hint="split or shorten the line, or raise CONVEYOR_MAX_LOG_LINE_BYTES on the "
                "server",
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
