"""Secret flow parameters (``SecretStr``) are encrypted at rest and shown as ``****``: only the
worker's claim answer carries them. Both front ends, SQLite and PostgreSQL, the raw rows read
back with SQL (and the SQLite file's bytes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text, update

from conveyor.secrets import Secret
from conveyor.server.tables import RunRow
from conveyor.settings import Settings
from fixtures.frontends import FRONT_ENDS, front_end

RUN_SECRET = "run-s3cr3t-Qx7pV2mZ"
DEFAULT_SECRET = "default-s3cr3t-Lk4wR9"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Parameters",
    "properties": {
        "n": {"type": "integer", "title": "n", "position": 0},
        "token": {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "title": "token",
            "position": 1,
        },
    },
    "required": ["n", "token"],
}


def _deployment(**overrides: Any) -> dict[str, Any]:
    return {
        "flow_name": "hello",
        "name": "prod",
        "entrypoint": "flows.py:hello",
        "source": {"kind": "local", "path": "/srv/flows"},
        "version": "sha256-" + "a" * 64,
        "parameters": {"n": 1, "token": DEFAULT_SECRET},
        "parameter_schema": SCHEMA,
        **overrides,
    }


@pytest.fixture(params=FRONT_ENDS)
def http(request: pytest.FixtureRequest, backend: Settings) -> Iterator[httpx.Client]:
    with front_end(request.param, backend) as client:
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _stored(settings: Settings) -> str:
    """Every parameter the database holds, as the database returns it (text)."""
    engine = create_engine(settings.database_url or f"sqlite:///{settings.home / 'conveyor.db'}")
    try:
        with engine.connect() as conn:
            rows = [
                *conn.execute(text("SELECT CAST(parameters AS TEXT) FROM runs")),
                *conn.execute(text("SELECT CAST(parameters AS TEXT) FROM deployments")),
                *conn.execute(text("SELECT CAST(config AS TEXT) FROM deployment_versions")),
            ]
    finally:
        engine.dispose()
    return "\n".join(str(row[0]) for row in rows)


def _sqlite_bytes(settings: Settings) -> bytes:
    """The SQLite database file and its WAL, as on disk (empty on PostgreSQL)."""
    if settings.database_url:
        return b""
    files = sorted(settings.home.glob("conveyor.db*"))
    assert settings.home / "conveyor.db" in files
    return b"".join(path.read_bytes() for path in files)


def test_secret_parameters_are_sealed_at_rest_and_shown_masked(
    http: httpx.Client, backend: Settings
) -> None:
    # Given a deployment whose default for a SecretStr parameter is a secret
    deployment = _ok(http.put("/api/deployments", json=_deployment()))
    # When a run is created with another secret value
    created = _ok(
        http.post("/api/deployments/hello/prod/runs", json={"parameters": {"token": RUN_SECRET}})
    )
    # Then no read shows either value: creation, get, list, deployment, deployments
    assert deployment["parameters"] == {"n": 1, "token": "****"}
    assert created["parameters"] == {"n": 1, "token": "****"}
    assert _ok(http.get(f"/api/runs/{created['id']}"))["parameters"]["token"] == "****"
    assert [r["parameters"]["token"] for r in _ok(http.get("/api/runs"))] == ["****"]
    assert _ok(http.get("/api/deployments/hello/prod"))["parameters"]["token"] == "****"
    assert [d["parameters"]["token"] for d in _ok(http.get("/api/deployments"))] == ["****"]
    # ...and the database holds neither, only envelopes (in the run, the deployment, its revision)
    stored = _stored(backend)
    assert RUN_SECRET not in stored
    assert DEFAULT_SECRET not in stored
    assert stored.count("$conveyor_secret") == 3
    on_disk = _sqlite_bytes(backend)
    assert RUN_SECRET.encode() not in on_disk
    assert DEFAULT_SECRET.encode() not in on_disk


def test_the_claim_carries_the_value_also_on_a_reclaim_and_a_retry(http: httpx.Client) -> None:
    # Given a run with a secret parameter, and one that takes the deployment's secret default
    _ok(http.put("/api/deployments", json=_deployment(retries=1)))
    first = _ok(
        http.post("/api/deployments/hello/prod/runs", json={"parameters": {"token": RUN_SECRET}})
    )
    second = _ok(http.post("/api/deployments/hello/prod/runs", json={"parameters": {}}))
    claim = {"worker": "w1", "claim_id": "first-claim"}
    # When a worker claims them
    claimed = _ok(http.post("/api/pools/default/claim", json=claim))
    # Then the claim answer carries the value, and so does the same claim presented again
    assert claimed["id"] == first["id"]
    assert claimed["parameters"] == {"n": 1, "token": RUN_SECRET}
    assert claimed["secret_parameters"] == ["token"]  # the worker masks it in the logs
    again = _ok(http.post("/api/pools/default/claim", json=claim))
    assert (again["id"], again["parameters"]["token"]) == (first["id"], RUN_SECRET)
    # ...and a state report's answer does not
    failed = _ok(
        http.post(
            f"/api/runs/{first['id']}/state",
            json={"worker": "w1", "state": "failed", "attempt": 1},
        )
    )
    assert failed["state"] == "scheduled"  # the retry
    assert failed["parameters"]["token"] == "****"
    # ...and the retry's claim carries the value again; the other run gets the default
    tokens = {}
    for n in range(2):
        claim = {"worker": "w1", "claim_id": f"retry-claim-{n}"}
        run = _ok(http.post("/api/pools/default/claim", json=claim))
        tokens[run["id"]] = run["parameters"]["token"]
    assert tokens == {first["id"]: RUN_SECRET, second["id"]: DEFAULT_SECRET}


def test_a_run_stored_in_clear_before_still_runs_and_is_shown_masked(
    http: httpx.Client, backend: Settings
) -> None:
    # Given a run whose secret parameter was stored in clear (before values were sealed)
    _ok(http.put("/api/deployments", json=_deployment()))
    run = _ok(http.post("/api/deployments/hello/prod/runs", json={"parameters": {}}))
    engine = create_engine(backend.database_url or f"sqlite:///{backend.home / 'conveyor.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(
                update(RunRow)
                .where(RunRow.id == run["id"])
                .values(parameters={"n": 2, "token": "legacy-plain"})
            )
    finally:
        engine.dispose()
    # When it is read and claimed
    shown = _ok(http.get(f"/api/runs/{run['id']}"))
    claimed = _ok(http.post("/api/pools/default/claim", json={"worker": "w1"}))
    # Then people see it masked, and the worker gets the value as stored
    assert shown["parameters"] == {"n": 2, "token": "****"}
    assert claimed["parameters"] == {"n": 2, "token": "legacy-plain"}
    assert shown["secret_parameters"] == claimed["secret_parameters"] == ["token"]


def test_putting_the_same_deployment_again_makes_no_revision(http: httpx.Client) -> None:
    # Given a deployment with a secret default (sealed: its ciphertext differs on every seal)
    first = _ok(http.put("/api/deployments", json=_deployment()))
    # When the same deployment is put again, and then with another secret default
    same = _ok(http.put("/api/deployments", json=_deployment()))
    changed = _ok(
        http.put("/api/deployments", json=_deployment(parameters={"n": 1, "token": "other"}))
    )
    # Then only the changed value makes a revision
    assert (first["revision"], same["revision"], changed["revision"]) == (1, 1, 2)


def test_a_run_sealed_under_another_key_fails_with_why_and_does_not_block_its_pool(
    backend: Settings,
) -> None:
    # Given a run sealed with the server's key
    with front_end("local", backend) as http:
        _ok(http.put("/api/deployments", json=_deployment()))
        old = _ok(http.post("/api/deployments/hello/prod/runs", json={"parameters": {}}))
    # When the server has another key: a run that needs the deployment's default, one that
    # gives its own value, and a worker claiming
    other = dataclasses.replace(backend, secret_key=Secret("another-key-of-enough-length-01234"))
    with front_end("local", other) as http:
        refused = http.post("/api/deployments/hello/prod/runs", json={"parameters": {}})
        own = _ok(
            http.post(
                "/api/deployments/hello/prod/runs", json={"parameters": {"token": RUN_SECRET}}
            )
        )
        claimed = None
        for attempt in range(3):  # PostgreSQL takes one candidate per claim
            answer = http.post("/api/pools/default/claim", json={"worker": "w1"})
            if answer.status_code == 200:
                claimed = answer.json()
                break
            assert answer.status_code == 204, (attempt, answer.text)
        failed = _ok(http.get(f"/api/runs/{old['id']}"))
        logs = _ok(http.get(f"/api/runs/{old['id']}/logs"))
    # Then the run needing the default is refused in one line naming the parameter and the key
    assert refused.status_code == 500
    assert refused.json()["detail"] == (
        "secret parameter 'token' of deployment hello/prod cannot be decrypted with this "
        "server's key"
    )
    assert "CONVEYOR_SECRET_KEY" in refused.json()["hint"]
    # ...the old run failed at its claim, saying why, and the next run of the pool was claimed
    assert failed["state"] == "failed"
    assert f"secret parameter 'token' of run {old['id']} cannot be decrypted" in failed["error"]
    assert any("cannot be decrypted" in line["message"] for line in logs)
    assert claimed is not None
    assert (claimed["id"], claimed["parameters"]["token"]) == (own["id"], RUN_SECRET)


def test_only_the_holder_of_the_attempt_gets_the_parameters(http: httpx.Client) -> None:
    # Given a run with a secret parameter, claimed by w1
    _ok(http.put("/api/deployments", json=_deployment()))
    run = _ok(
        http.post("/api/deployments/hello/prod/runs", json={"parameters": {"token": RUN_SECRET}})
    )
    path = f"/api/runs/{run['id']}/parameters"
    before = http.post(path, json={"worker": "w1", "attempt": 1})
    _ok(http.post("/api/pools/default/claim", json={"worker": "w1"}))
    # When its holder asks for its parameters, and others do
    held = _ok(http.post(path, json={"worker": "w1", "attempt": 1}))
    other = http.post(path, json={"worker": "w2", "attempt": 1})
    stale = http.post(path, json={"worker": "w1", "attempt": 2})
    for state in ("running", "completed"):
        _ok(http.post(f"/api/runs/{run['id']}/state", json={"worker": "w1", "state": state}))
    after = http.post(path, json={"worker": "w1", "attempt": 1})
    # Then only the holder of the current attempt gets the value; the rest a one-line 409
    assert held == {"parameters": {"n": 1, "token": RUN_SECRET}}
    for refused, says in (
        (before, "not claimed"),
        (other, "held by 'w1'"),
        (stale, "which is at attempt 1"),
        (after, "it is completed"),
    ):
        assert refused.status_code == 409, refused.text
        assert says in refused.json()["detail"]
        assert RUN_SECRET not in refused.text
