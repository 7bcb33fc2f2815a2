"""The embedded front end serves exactly the HTTP API: the same routes, answers and errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conveyor.connect import EMBEDDED_URL
from conveyor.server.app import create_app
from conveyor.server.local import ROUTES, LocalTransport
from conveyor.settings import Settings


def test_the_local_table_has_every_http_route_and_no_other(settings: Settings) -> None:
    app = create_app(settings, sweep_every=None)
    served = {
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    }
    local = {(route.method, route.path) for route in ROUTES}
    assert local == served


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/api/runs/nope-nope", None, 404, "run 'nope-nope' not found"),
        ("GET", "/api/runs?limit=0", None, 422, "limit"),
        ("GET", "/api/runs?state=bogus", None, 422, "state"),
        ("POST", "/api/pools", b'{"name": "bad name!"}', 422, "is not a valid work pool name"),
        ("POST", "/api/pools", b"{not json", 422, "invalid request"),
        ("DELETE", "/api/pools", None, 405, None),
        ("GET", "/api/nothing-here", None, 404, None),
    ],
)
def test_both_front_ends_answer_errors_alike(
    settings: Settings, method: str, path: str, body: bytes | None, status: int, detail: str | None
) -> None:
    app = create_app(settings, sweep_every=None)
    headers = {"content-type": "application/json"}

    async def over_asgi() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, content=body, headers=headers)

    remote = asyncio.run(over_asgi())
    with httpx.Client(transport=LocalTransport(settings), base_url=EMBEDDED_URL) as local:
        mine = local.request(method, path, content=body, headers=headers)
    assert mine.status_code == remote.status_code == status
    if detail is not None:
        assert detail in mine.json()["detail"]
        assert detail in remote.json()["detail"]


def test_a_watch_answers_as_soon_as_the_run_ends(settings: Settings) -> None:
    # Given a running run watched with a long wait
    import threading
    import time

    from conveyor.connect import connect
    from conveyor.schemas import DeploymentCreate, RunState, StateUpdate

    with connect(settings) as api:
        api.put_deployment(
            DeploymentCreate(
                flow_name="f", name="d", entrypoint="f.py:f", source={"kind": "x"}, version="v1"
            )
        )
        run = api.create_run("f", "d")
        assert api.claim_run("default", worker="w") is not None
        api.set_run_state(run.id, StateUpdate(worker="w", state=RunState.RUNNING))

        def finish() -> None:
            time.sleep(0.3)
            api.set_run_state(run.id, StateUpdate(worker="w", state=RunState.COMPLETED, result=1))

        threading.Thread(target=finish, daemon=True).start()
        # When the watch waits for news, then it returns with the final state well before the
        # wait is over (and a watch that has seen no change waits)
        started = time.monotonic()
        news = api.watch_run(run.id, state=RunState.RUNNING, wait=10)
        assert news.run.state is RunState.COMPLETED
        assert time.monotonic() - started < 5
        quiet = time.monotonic()
        again = api.watch_run(run.id, after=10**6, state=RunState.COMPLETED, wait=0.3)
        assert again.logs == []
        assert time.monotonic() - quiet >= 0.3
