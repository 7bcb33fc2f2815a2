"""Fixtures for the server tests: the real app in-process, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import Deployment, DeploymentCreate
from conveyor.settings import Settings
from fixtures.ports import free_port, wait_until
from fixtures.postgres import PostgresCluster, postgres_cluster, postgres_url  # noqa: F401

SCHEMA = {
    "type": "object",
    "title": "Parameters",
    "properties": {
        "n": {"type": "integer", "title": "N", "position": 0},
        "name": {"type": "string", "title": "Name", "default": "world", "position": 1},
    },
    "required": ["n"],
}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session (migrations are tested on empty databases)."""
    from conveyor.server.db import Database
    from conveyor.server.migrate import ensure_schema

    path = tmp_path_factory.mktemp("sqlite-template") / "conveyor.db"
    db = Database(f"sqlite:///{path}")
    ensure_schema(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: PostgresCluster) -> str:  # noqa: F811
    """A PostgreSQL database migrated once per session, copied for each test."""
    from conveyor.server.db import Database
    from conveyor.server.migrate import ensure_schema

    url = postgres_cluster.create_database(name="conveyor_template")
    db = Database(url)
    ensure_schema(db)
    db.dispose()
    return "conveyor_template"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """Settings on the embedded SQLite file, or on a fresh PostgreSQL database (both migrated)."""
    if request.param == "sqlite":
        settings.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), settings.home / "conveyor.db")
        yield settings
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database(template=request.getfixturevalue("postgres_template"))
    try:
        yield dataclasses.replace(settings, database_url=url)
    finally:
        cluster.drop_database(url)


@pytest.fixture
def api(backend: Settings) -> Iterator[ConveyorClient]:
    """A client running the real app in-process over the backend's database."""
    with connect(backend) as client:
        yield client


def deployment_body(**overrides: Any) -> DeploymentCreate:
    values: dict[str, Any] = {
        "flow_name": "hello",
        "name": "prod",
        "entrypoint": "flows.py:hello",
        "source": {"kind": "local", "path": "/srv/flows"},
        "version": "sha256-" + "a" * 64,
        "parameters": {"n": 1},
        "parameter_schema": SCHEMA,
    }
    values.update(overrides)
    return DeploymentCreate(**values)


@pytest.fixture
def deploy(api: ConveyorClient) -> Callable[..., Deployment]:
    """``deploy(**overrides)`` puts a deployment ``hello/prod`` (or as overridden)."""

    def put(**overrides: Any) -> Deployment:
        return api.put_deployment(deployment_body(**overrides))

    return put


class ServerProcess:
    """A `conveyor server start` subprocess on a free loopback port, stopped by PID."""

    def __init__(self, env: dict[str, str], *, port: int | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.started_in: float | None = None

    def start(self, *, timeout: float = 30.0) -> ServerProcess:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "server", "start", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not wait_until(self.healthy, timeout=timeout, interval=0.01):
            self.stop()
            raise AssertionError(f"server did not become healthy: {self.output()}")
        self.started_in = time.monotonic() - started
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.output()}")
        headers = (
            {"X-API-Key": self.env["CONVEYOR_API_KEY"]} if "CONVEYOR_API_KEY" in self.env else {}
        )
        request = urllib.request.Request(f"{self.url}/api/health", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def output(self) -> str:
        if self.proc is None or self.proc.poll() is None:
            return ""
        out, err = self.proc.communicate()
        return f"rc={self.proc.returncode} stdout={out!r} stderr={err[-2000:]!r}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    """``server_process(**env)`` starts a server with the test's environment plus ``env``."""
    started: list[ServerProcess] = []

    def start(port: int | None = None, **env: str) -> ServerProcess:
        server = ServerProcess({**os.environ, **env}, port=port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
