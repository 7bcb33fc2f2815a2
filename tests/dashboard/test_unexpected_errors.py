"""An unexpected exception (a bug) in a page or an API route is a one-line 500, and the keep-alive
connection it came on stays usable: the real app served by uvicorn on a loopback port, one httpx
client reusing its connection."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

from conveyor.server.app import create_app, database_of
from conveyor.server.dashboard.pages import PageRoute
from conveyor.settings import Settings


def _buggy_app(settings: Settings) -> FastAPI:
    app = create_app(settings, sweep_every=None)

    def fail() -> None:
        raise RuntimeError("a bug, with secret-ish detail 7f3k")

    pages = APIRouter(route_class=PageRoute)
    pages.add_api_route("/buggy-page", fail, methods=["GET"])
    api = APIRouter()
    api.add_api_route("/api/buggy", fail, methods=["GET"])
    app.include_router(pages)
    app.include_router(api)
    return app


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The app (with two buggy routes) served by uvicorn on 127.0.0.1, stopped at the end."""
    app = _buggy_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    # the server's own log level ("warning"): uvicorn logs a traceback before closing, which
    # is the window in which the client's next request arrived
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        database_of(app).dispose()


def _client_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/buggy-page", "internal server error"),
        ("/api/buggy", '"detail":"internal server error"'),
    ],
)
def test_a_500_leaves_the_keep_alive_connection_usable(
    served: str, path: str, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given one client with a keep-alive connection to the server
    with httpx.Client(base_url=served, timeout=10) as client:
        # When a request hits a bug, and the next one follows at once on the same connection
        with caplog.at_level(logging.ERROR):
            failed = client.get(path)
            after = client.get("/api/health")
        # Then the bug is a one-line 500 that tells nothing of the exception...
        assert failed.status_code == 500
        assert shown in failed.text
        assert "7f3k" not in failed.text
        assert "Traceback" not in failed.text
        # ...the next request is answered on the same connection (not reset)
        assert after.status_code == 200
        assert _client_port(after) == _client_port(failed)
        assert failed.headers.get("connection", "").lower() != "close"
    # ...and the server's log has the traceback
    assert any(
        "failed unexpectedly" in r.getMessage() and r.exc_info is not None for r in caplog.records
    )
