"""`EmbeddedTransport`: an httpx transport that serves requests with an ASGI app in this process.

The app runs on a private asyncio event loop in a daemon thread (so an unclosed client never
holds the interpreter open); each request is one coroutine submitted to that loop, so requests
from many threads run concurrently, long-polls included. No sockets, no lifespan events (the
embedded app needs no background tasks: leases expire lazily on claims, heartbeats and reads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

__all__ = ["EmbeddedTransport"]

logger = logging.getLogger(__name__)

_GRACE = 10.0
"""Seconds a request may run past the client's read timeout before the transport gives up."""


class EmbeddedTransport(httpx.BaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        timeout = request.extensions.get("timeout", {}).get("read")
        future = asyncio.run_coroutine_threadsafe(self._call(request, body), self._running_loop())
        try:
            status, headers, content = future.result(None if timeout is None else timeout + _GRACE)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise httpx.ReadTimeout("the embedded server did not answer in time") from exc
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="conveyor-embedded", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _call(
        self, request: httpx.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": (url.host, url.port or 80),
        }
        delivered = False
        disconnected = asyncio.Event()
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        started = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self._app(scope, receive, send)
        except Exception:
            logger.exception("embedded request failed method=%s path=%s", request.method, url.path)
            if not started:
                return 500, [(b"content-type", b"application/json")], b'{"detail":"internal error"}'
        finally:
            disconnected.set()
        return status, headers, b"".join(chunks)
