"""ASGI middleware of the HTTP front end: the request body limit, and unexpected errors.

`UnexpectedErrorMiddleware`: an exception no handler knows (a bug) is logged with its traceback
and answered with a one-line 500, and the connection stays usable. Without it Starlette's
``ServerErrorMiddleware`` sends its 500 and re-raises, and uvicorn then closes the transport
(the response had started): a request the client had already sent on that keep-alive connection
was reset. An exception after the response started still goes up (that response is cut short,
so the connection must close).

`BodyLimitMiddleware`: a request whose ``Content-Length`` is over ``max_request_bytes`` is refused
before a byte of it is read; a body without a length (chunked) is read up to the limit and refused
the moment it passes it. The app then gets the whole body at once, so nothing parses half a
request. Bundle uploads (``PUT /api/bundles/...``) are streamed by their route under their own
limit (``max_bundle_bytes``) and pass through.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor._values import format_size
from conveyor.server.errors import error_body
from conveyor.server.limits import BODY_HINT, TOO_LARGE

__all__ = ["BodyLimitMiddleware", "UnexpectedErrorMiddleware"]

logger = logging.getLogger(__name__)

UNEXPECTED = "internal server error"
UNEXPECTED_HINT = "this is a bug in the server; its log has the traceback"

_STREAMED = ("/api/bundles/",)


class BodyLimitMiddleware:
    """413 for a request body larger than ``max_bytes``, decided before the app parses it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_STREAMED):
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
                "hint": BODY_HINT,
            },
            status_code=TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class UnexpectedErrorMiddleware:
    """A one-line 500 for an exception nothing else handled, on a connection that stays open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            logger.exception(
                "request failed unexpectedly method=%s path=%s", scope["method"], scope["path"]
            )
            await _unexpected(scope)(scope, receive, send)


def _unexpected(scope: Scope) -> Response:
    if scope["path"].startswith("/api"):
        return JSONResponse(error_body(UNEXPECTED, UNEXPECTED_HINT), status_code=500)
    return PlainTextResponse(f"{UNEXPECTED} ({UNEXPECTED_HINT})", status_code=500)
