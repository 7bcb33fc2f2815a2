"""A ``SecretStr`` flow parameter end to end on the embedded default: the real command line, a
real worker, the SQLite file (and its WAL) read as bytes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.worker.executors.container import OUTCOME_PREFIX
from e2e.conftest import api, command_env, conveyor, ok

pytestmark = pytest.mark.slow

DEFAULT_SECRET = "dflt-Hq2v8RtW4x"
RUN_SECRET = "runv-Zp5c1NmK7y"

FLOW = """
from pathlib import Path

from pydantic import SecretStr

from conveyor import flow


@flow
def login(out: str, token: SecretStr, user: str = "ada") -> str:
    assert isinstance(token, SecretStr), type(token)
    Path(out).write_text(token.get_secret_value())
    print(f"the token is {token.get_secret_value()}")
    return user
"""


def _database_bytes(home: Path) -> bytes:
    files = sorted(home.glob("conveyor.db*"))
    assert home / "conveyor.db" in files
    return b"".join(path.read_bytes() for path in files)


def test_a_secret_parameter_reaches_the_flow_and_is_stored_and_shown_only_masked(
    tmp_path: Path,
) -> None:
    # Given a deployment whose SecretStr parameter has a secret default, and two runs: one with
    # its own secret value, one with the default
    env = command_env()
    home = Path(env["CONVEYOR_HOME"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOW.lstrip())
    out = tmp_path / "out"
    out.mkdir()
    deploy = ["deploy", "flows.py:login", "--name", "s", "--param", f"token={DEFAULT_SECRET}"]
    ok(conveyor(*deploy, env=env, cwd=project))
    own = ok(
        conveyor("run", "login/s", "-p", f"token={RUN_SECRET}", "-p", f"out={out / 'own'}", env=env)
    ).strip()
    default = ok(conveyor("run", "login/s", "-p", f"out={out / 'default'}", env=env)).strip()
    # When a worker runs them
    worker = conveyor("worker", "start", "--burst", env=env, timeout=120)
    # Then each flow got the real value (as a SecretStr)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert (out / "own").read_text() == RUN_SECRET
    assert (out / "default").read_text() == DEFAULT_SECRET
    # ...and the command line shows it masked, in tables and in --json
    for run_id in (own, default):
        shown = json.loads(ok(conveyor("runs", "inspect", run_id, "--json", env=env)))
        assert shown["state"] == "completed"
        assert shown["parameters"]["token"] == "****"
    listed = ok(conveyor("runs", "ls", "--json", env=env))
    deployment = ok(conveyor("deployments", "inspect", "login/s", "--json", env=env))
    table = ok(conveyor("deployments", "inspect", "login/s", env=env))
    assert json.loads(deployment)["parameters"]["token"] == "****"
    # ...and a flow printing the value ships **** to the run's logs
    logs = [ok(conveyor("runs", "logs", run_id, env=env)) for run_id in (own, default)]
    assert all("the token is ****" in text for text in logs), logs
    for text in (listed, deployment, table, worker.stdout + worker.stderr, *logs):
        assert RUN_SECRET not in text
        assert DEFAULT_SECRET not in text
    # ...and neither value is anywhere in the database file or its WAL
    stored = _database_bytes(home)
    assert b"$conveyor_secret" in stored
    assert RUN_SECRET.encode() not in stored
    assert DEFAULT_SECRET.encode() not in stored


def test_a_run_stored_before_values_were_sealed_still_runs(tmp_path: Path) -> None:
    # Given a run whose secret parameter is stored in clear (written by an older version)
    env = command_env()
    home = Path(env["CONVEYOR_HOME"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOW.lstrip())
    out = tmp_path / "legacy"
    ok(conveyor("deploy", "flows.py:login", "--name", "s", env=env, cwd=project))
    run_id = ok(
        conveyor("run", "login/s", "-p", "token=will-be-replaced", "-p", f"out={out}", env=env)
    ).strip()
    with sqlite3.connect(home / "conveyor.db") as db:
        db.execute(
            "UPDATE runs SET parameters = ? WHERE id = ?",
            (json.dumps({"out": str(out), "token": "legacy-plain-value"}), run_id),
        )
    # When a worker runs it
    worker = conveyor("worker", "start", "--burst", env=env, timeout=120)
    # Then the flow gets the stored value, and `runs inspect` shows it masked
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert out.read_text() == "legacy-plain-value"
    inspected = ok(conveyor("runs", "inspect", run_id, env=env))
    assert '"token": "****"' in inspected
    assert "legacy-plain-value" not in inspected
    logs = ok(conveyor("runs", "logs", run_id, env=env))
    assert "the token is ****" in logs
    assert "legacy-plain-value" not in logs


def test_a_container_run_gets_the_value_as_its_holder(tmp_path: Path) -> None:
    # Given a run with a secret parameter, claimed by a container pool's worker
    env = command_env()
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOW.lstrip())
    out = tmp_path / "container-out"
    ok(conveyor("deploy", "flows.py:login", "--name", "s", env=env, cwd=project))
    args = ["run", "login/s", "-p", f"token={RUN_SECRET}", "-p", f"out={out}"]
    run_id = ok(conveyor(*args, env=env)).strip()
    with api(env) as client:
        claimed = client.claim_run("default", worker="docker-worker")
        deployment = client.get_deployment("login", "s")
    assert claimed is not None
    assert claimed.id == run_id
    # When the container's command runs with the environment a docker pool gives it (as a
    # process: no container engine here), the run's parameters masked in the run itself
    inside = {
        **env,
        "CONVEYOR_RUN_ID": run_id,
        "CONVEYOR_RUN_SOURCE": json.dumps(deployment.source),
        "CONVEYOR_RUN_VERSION": deployment.version,
        "CONVEYOR_RUN_ENTRYPOINT": deployment.entrypoint,
        "CONVEYOR_CACHE_DIR": str(tmp_path / "container-cache"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.worker.container"],
        env=inside,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then the flow got the real value, which the container printed nowhere
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1].removeprefix(OUTCOME_PREFIX))
    assert outcome["state"] == "completed", outcome
    assert out.read_text() == RUN_SECRET
    assert RUN_SECRET not in done.stdout + done.stderr
    # ...and its print of the value reached the run's logs as ****
    logs = ok(conveyor("runs", "logs", run_id, env=env))
    assert "the token is ****" in logs
    assert RUN_SECRET not in logs
