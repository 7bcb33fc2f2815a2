"""Secrets a worker hands a run are masked before its logs and its error reach the server: the
real ``conveyor server start`` (SQLite), a real worker process, a flow that prints its secret."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.deploy import from_source
from conveyor.schemas import RunState
from conveyor.settings import Settings
from e2e.conftest import Server, api, command_env, server_env, wait_for_run

pytestmark = [pytest.mark.slow, pytest.mark.service]

TOKEN = "tok-7f3Kq9-Zx_5mP+wR/2vL8s"

LEAK = """
import base64
import logging
import os

from conveyor import flow


@flow
def leak() -> None:
    token = os.environ["TOKEN"]
    print(token)
    print(f"the token is {token}, keep it safe")
    print(base64.b64encode(token.encode()).decode())
    print(base64.urlsafe_b64encode(token.encode()).decode().rstrip("="))
    print("Authorization: Basic " + base64.b64encode(f"user:{token}".encode()).decode())
    logging.getLogger("user").warning("logged %s inside a line", token)
    raise ValueError(f"refusing token {token}")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("masking-server")
    started = Server.start(server_env(home), log=home / "server.log")
    try:
        yield started
    finally:
        started.stop()


def _forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(raw).decode()[:16],
    ]


def test_a_flow_printing_its_secret_ships_only_stars(server: Server, tmp_path: Path) -> None:
    # Given a secret on the server, handed to a deployment's flow (`${NAME}` in its env) and
    # to a pull step (which echoes it)
    env = command_env(CONVEYOR_API_URL=server.url)
    project = tmp_path / "project"
    project.mkdir()
    (project / "leak.py").write_text(LEAK)
    with api(env) as client:
        client.set_secret("LEAK_TOKEN", TOKEN)
        client.create_pool("masking")
        deployment = from_source(project, "leak.py:leak").deploy(
            "leaky",
            work_pool="masking",
            job_variables={"env": {"TOKEN": "${LEAK_TOKEN}"}},
            pull_steps=[
                {
                    "run_shell_script": {
                        "script": "sh -c 'echo step sees $T'",
                        "env": {"T": "{{ secrets.LEAK_TOKEN }}"},
                    }
                }
            ],
            settings=Settings.from_env(env),
            client=client,
        )
        run = client.create_run(deployment.flow_name, deployment.name)
    # When a worker runs it
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "start", "--pool", "masking", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Then the server holds the lines with the secret (and its base64 forms) masked
    with api(env) as client:
        finished = wait_for_run(client, run.id, timeout=10)
        lines = [line.message for line in client.read_logs(run.id)]
    text = "\n".join(lines)
    assert "step sees ****" in lines
    assert "****" in lines
    assert "the token is ****, keep it safe" in lines
    assert lines.count("****") >= 3  # the value, its base64, its URL-safe base64
    assert any(line.startswith("Authorization: Basic ") and "****" in line for line in lines)
    assert "logged **** inside a line" in lines
    assert "ValueError: refusing token ****" in text  # the traceback
    for form in _forms(TOKEN):
        assert form not in text
    # ...and so does the run's error; the worker's own log does not show it either
    assert finished.state is RunState.FAILED
    assert finished.error == "ValueError: refusing token ****"
    assert TOKEN not in done.stdout + done.stderr
