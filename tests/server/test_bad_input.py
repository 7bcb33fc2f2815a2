"""Bad input is a one-line 4xx, never a 500 or a 503, and never stored (SQLite and PostgreSQL).

Bodies are sent as raw JSON text (``NaN``, ``"\\ud800"``, ``"\\u0000"`` written the way a
hostile or careless client writes them) to the real app in-process; the client's own models
would refuse most of them before sending.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from conveyor.schemas import RunState
from conveyor.server.app import create_app, database_of
from conveyor.server.db import Database
from conveyor.server.tables import RunRow
from conveyor.settings import Settings
from fixtures.asgi import AsgiTransport
from fixtures.frontends import FRONT_ENDS, front_end

RUNS = "/api/deployments/hello/prod/runs"
SCHEMA = {
    "type": "object",
    "properties": {"x": {}, "f": {"type": "number"}, "n": {"type": "integer"}},
}


def client_for(app: FastAPI) -> httpx.Client:
    transport = AsgiTransport(app)
    return httpx.Client(transport=transport, base_url="http://conveyor.test", timeout=10)


@pytest.fixture(params=FRONT_ENDS)
def http(request: pytest.FixtureRequest, backend: Settings) -> Iterator[httpx.Client]:
    """Raw HTTP over the backend's database, to each front end (the app, the embedded one)."""
    with front_end(request.param, backend) as client:
        yield client


def send(http: httpx.Client, method: str, path: str, body: str = "") -> httpx.Response:
    return http.request(
        method, path, content=body.encode(), headers={"Content-Type": "application/json"}
    )


def deployment(**overrides: object) -> str:
    """A deployment body; a value ``"<raw>"`` is written as the raw JSON text ``raw``."""
    body: dict[str, object] = {
        "flow_name": "hello",
        "name": "prod",
        "entrypoint": "flows.py:hello",
        "source": {"kind": "local", "path": "/srv/flows"},
        "version": "sha256-" + "a" * 64,
        "parameter_schema": SCHEMA,
    }
    body.update(overrides)
    text = json.dumps(body)
    for raw in ("NaN", "Infinity"):
        text = text.replace(f'"<{raw}>"', raw)
    return text


@pytest.fixture
def deployed(http: httpx.Client) -> None:
    response = send(http, "PUT", "/api/deployments", deployment())
    assert response.status_code == 200, response.text


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def assert_refused(response: httpx.Response, status: int, *parts: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert "\n" not in body["detail"]
    assert "database unavailable" not in body["detail"]
    for part in parts:
        assert part in body["detail"], body
    return body


# --- 8: parameters that cannot be stored are refused; a stored bad row never breaks a listing --


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (nested(260), "parameters.x: it is nested more than 64 levels deep"),
        ('"\\ud800"', "parameters.x: the text contains a lone surrogate (\\ud800)"),
        ('"a\\u0000b"', "parameters.x: the text contains a NUL character (\\u0000)"),
        ('{"k\\ud800": 1}', "parameters.x.k\\ud800: its name: the text contains a lone surr"),
    ],
    ids=["nested-260", "lone-surrogate", "nul", "surrogate-key"],
)
def test_parameters_that_cannot_be_stored_are_a_422_and_nothing_is_stored(
    http, deployed, value, message
):
    response = send(http, "POST", RUNS, f'{{"parameters": {{"x": {value}}}}}')

    body = assert_refused(response, 422, "invalid request: " + message)
    assert body["hint"]
    listed = http.get("/api/runs")
    assert (listed.status_code, listed.json()) == (200, [])


def test_sixty_three_levels_inside_a_parameter_are_accepted(http, deployed):
    response = send(http, "POST", RUNS, f'{{"parameters": {{"x": {nested(63)}}}}}')
    assert response.status_code == 201, response.text


def _store_directly(backend: Settings, run_id: str, parameters: dict[str, object]) -> str:
    """Write what the API used to accept (a row stored before these checks existed)."""
    db = Database(backend.effective_database_url)

    def write(session) -> None:
        session.get(RunRow, run_id).parameters = parameters

    try:
        db.write(write)
        return db.dialect
    finally:
        db.dispose()


def test_runs_list_renders_a_row_stored_before_the_checks(
    backend, http, deployed, capsys, monkeypatch
):
    # Given a stored run whose parameters cannot be serialised (nested 260 deep, and on SQLite
    # a lone surrogate too: PostgreSQL never stored those) next to a good run
    good = send(http, "POST", RUNS, '{"parameters": {"n": 1}}').json()["id"]
    bad = send(http, "POST", RUNS, "{}").json()["id"]
    poison: dict[str, object] = {"x": json.loads(nested(260))}
    if Database(backend.effective_database_url).dialect == "sqlite":
        poison["s"] = "\ud800"
    dialect = _store_directly(backend, bad, poison)

    # When the runs are listed, through the API and the CLI
    listed = http.get("/api/runs")
    one = http.get(f"/api/runs/{bad}")
    if backend.database_url:
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", backend.database_url)
    from conveyor.cli import main

    code = main(["runs", "ls"])
    out, err = capsys.readouterr()

    # Then both answer, the bad row shown with placeholders where it cannot be rendered
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()] == [bad, good]
    assert one.status_code == 200, one.text
    shown = one.json()["parameters"]
    depth, node = 0, shown["x"]
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert (node, depth) == ("<nested more than 64 levels: not shown>", 63)
    if dialect == "sqlite":
        assert shown["s"] == "\ufffd"
    assert code == 0, err
    assert bad[:8] in out
    assert good[:8] in out


# --- 9: claim and heartbeat numbers are bounded and finite --------------------------------------

_AT_MOST = "Input should be less than or equal to"
_AT_LEAST = "Input should be greater than or equal to"
_FINITE = "Input should be a finite number"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('"lease_seconds": 1e308', f"lease_seconds: {_AT_MOST} 86400"),
        ('"lease_seconds": NaN', f"lease_seconds: {_FINITE}"),
        ('"lease_seconds": -5', f"lease_seconds: {_AT_LEAST} 0.1"),
        ('"lease_seconds": 0', f"lease_seconds: {_AT_LEAST} 0.1"),
        ('"wait_seconds": NaN', f"wait_seconds: {_FINITE}"),
        ('"wait_seconds": Infinity', f"wait_seconds: {_FINITE}"),
        ('"wait_seconds": -1', f"wait_seconds: {_AT_LEAST} 0"),
        ('"labels": ["a b"]', "'a b' is not a valid label"),
    ],
)
def test_claim_numbers_are_bounded_and_finite(http, deployed, fields, message):
    send(http, "POST", RUNS, "{}")
    started = time.monotonic()

    response = send(http, "POST", "/api/pools/default/claim", f'{{"worker": "w1", {fields}}}')

    assert time.monotonic() - started < 5  # wait_seconds NaN used to never answer
    assert_refused(response, 422, "invalid request: " + message)
    assert http.get("/api/runs").json()[0]["state"] == "scheduled"  # nothing was claimed


@pytest.mark.parametrize("lease", ["NaN", "1e308", "-1", "Infinity"])
def test_heartbeat_lease_is_bounded_and_finite(http, deployed, lease):
    send(http, "POST", RUNS, "{}")
    claimed = send(http, "POST", "/api/pools/default/claim", '{"worker": "w1"}').json()

    response = send(
        http,
        "POST",
        f"/api/runs/{claimed['id']}/heartbeat",
        f'{{"worker": "w1", "lease_seconds": {lease}}}',
    )

    assert_refused(response, 422, "invalid request: lease_seconds: Input should be")
    run = http.get(f"/api/runs/{claimed['id']}").json()
    assert run["lease_expires"] == claimed["lease_expires"]


def test_a_claim_within_the_bounds_still_works(http, deployed):
    send(http, "POST", RUNS, "{}")
    body = '{"worker": "w1", "lease_seconds": 0.5, "wait_seconds": 600}'
    response = send(http, "POST", "/api/pools/default/claim", body)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == RunState.PENDING.value


# --- 10 and 11: NUL, NaN/Infinity and lone surrogates are 422s everywhere, never 503s ----------

_NUL = "the text contains a NUL character (\\u0000), which cannot be stored"
_SURROGATE = "the text contains a lone surrogate (\\ud800), which is not valid Unicode"


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", RUNS, '{"parameters": {"f": NaN}}', "parameters.f: NaN is not a finite number"),
        ("POST", RUNS, '{"parameters": {"f": Infinity}}', "parameters.f: Infinity is not a fi"),
        ("POST", RUNS, '{"parameters": {"f": -Infinity}}', "parameters.f: -Infinity is not a"),
        ("POST", RUNS, '{"parameters": {"f": [1e999]}}', "parameters.f[0]: Infinity is not"),
        ("PUT", "/api/deployments", deployment(description="a\x00b"), "description: " + _NUL),
        ("PUT", "/api/deployments", deployment(entrypoint="\ud800"), "entrypoint: " + _SURROGATE),
        ("PUT", "/api/deployments", deployment(tags=["\x00"]), "tags[0]: " + _NUL),
        ("PUT", "/api/deployments", deployment(parameters={"f": "<NaN>"}), "parameters.f: NaN"),
        ("PUT", "/api/deployments", deployment(retries=1, timeout_seconds="<Infinity>"), _FINITE),
        ("PUT", "/api/deployments", deployment(retry_delay_seconds=1e308), _AT_MOST),
        ("PUT", "/api/secrets/TOKEN", '{"value": "a\\ud800"}', "value: " + _SURROGATE),
        ("PUT", "/api/secrets/TOKEN", '{"value": "a\\u0000"}', "value: " + _NUL),
        ("POST", "/api/pools", '{"name": "gpu", "description": "\\u0000"}', "description: "),
        (
            "POST",
            "/api/workers/heartbeat",
            '{"name": "w\\u0000", "pool": "default"}',
            "worker name 'w\\x00' is not valid: it contains the control character \\u0000",
        ),
        ("GET", "/api/runs?pool=a%00b", "", "URL: " + _NUL),
        ("GET", "/api/deployments/hel%00lo/prod", "", "URL: " + _NUL),
    ],
)
def test_bad_values_are_a_422_on_every_backend(http, deployed, method, path, body, message):
    response = send(http, method, path, body)

    refused = assert_refused(response, 422, message)
    assert refused["hint"]
    assert http.get("/api/secrets").json() == []
    assert [p["name"] for p in http.get("/api/pools").json()] == ["default"]
    assert http.get("/api/deployments/hello/prod").json()["description"] == ""


def test_a_secret_value_is_never_echoed_in_a_refusal(http):
    response = send(http, "PUT", "/api/secrets/TOKEN", '{"value": "hunter2\\u0000"}')
    assert_refused(response, 422, "value: " + _NUL)
    assert "hunter2" not in response.text


def test_log_text_a_flow_printed_is_cleaned_not_refused(http, deployed):
    # Given a running run
    send(http, "POST", RUNS, "{}")
    run_id = send(http, "POST", "/api/pools/default/claim", '{"worker": "w1"}').json()["id"]
    # When the worker ships a line holding a NUL and a lone surrogate (flow output is anything)
    records = '[{"timestamp": "2026-01-01T00:00:00Z", "message": "a\\u0000b\\udc80c"}]'
    response = send(http, "POST", f"/api/runs/{run_id}/logs", records)
    # Then it is stored with U+FFFD in their place, on both backends
    assert response.status_code == 204, response.text
    lines = http.get(f"/api/runs/{run_id}/logs").json()
    assert [line["message"] for line in lines] == ["a\ufffdb\ufffdc"]


@pytest.mark.postgres
def test_postgres_data_errors_are_a_422_not_a_503(postgres_url, settings):
    """A value PostgreSQL refuses as data (SQLSTATE class 22, or psycopg's own NUL check) is bad
    input, never 'database unavailable' (which the client retries)."""
    import dataclasses

    app = create_app(dataclasses.replace(settings, database_url=postgres_url), sweep_every=None)
    db = database_of(app)
    casts = {"jsonb": "SELECT CAST(:v AS jsonb)", "text": "SELECT CAST(:v AS text)"}

    @app.post("/api/test/cast/{kind}")  # a route that hands the value straight to the database
    def cast(kind: str, value: dict[str, str]) -> dict[str, str]:
        db.write(lambda s: s.execute(text(casts[kind]), {"v": value["v"]}).all())
        return {}

    with client_for(app) as http:
        for kind, value, reason in [
            ("jsonb", "NaN", "invalid input syntax for type json"),
            ("jsonb", '"\\u0000"', "unsupported Unicode escape sequence"),
            ("text", "a\x00b", "PostgreSQL text fields cannot contain NUL (0x00) bytes"),
            ("text", "a\ud800", "the text contains a lone surrogate (\\ud800)"),
        ]:
            response = send(http, "POST", f"/api/test/cast/{kind}", json.dumps({"v": value}))
            assert response.status_code == 422, response.text
            assert response.json()["detail"] == f"invalid input: {reason}"
    db.dispose()
