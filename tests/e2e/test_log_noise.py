"""What the command line and the worker print when a cloud library talks (`conveyor._logging`):
through the real ``conveyor`` command and a real worker, against Azurite, moto and an
unreachable GCS emulator. Only Conveyor's own lines; everything with ``--debug``."""

# ruff: noqa: F401  (fixtures imported from fixtures.blob_servers are parameters here)
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import api, command_env, conveyor, ok, one_line_error, wait_for_run
from fixtures.blob_servers import AWS_KEY_ID, AWS_SECRET, azurite, moto_server
from fixtures.ports import free_port
from worker.flows_project import write_project

pytestmark = [pytest.mark.slow, pytest.mark.service]

# What azure-core's HTTP logging policy and botocore print at INFO.
LIBRARY_LINES = (
    "Request URL:",
    "Request method:",
    "Request headers:",
    "Response status:",
    "Response headers:",
    "x-ms-",
    "Found credentials",
)


@pytest.mark.parametrize("platform", ["az", "s3"])
def test_a_worker_fetching_from_a_blob_store_logs_no_library_chatter(
    platform: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Given a deployment in a bundle store on Azurite (connection string) or moto (AWS keys
    # from the environment, which botocore announces at INFO)
    server: Any = request.getfixturevalue("azurite" if platform == "az" else "moto_server")
    bucket = server.new_bucket()
    if platform == "az":
        env = command_env(AZURE_STORAGE_CONNECTION_STRING=server.connection_string)
    else:
        env = command_env(
            AWS_ACCESS_KEY_ID=AWS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=AWS_SECRET,
            AWS_ENDPOINT_URL_S3=server.endpoint,
        )
    env["CONVEYOR_BUNDLE_STORE"] = f"{platform}://{bucket}/conveyor"
    project = write_project(tmp_path / "project")
    deployed = conveyor("deploy", "flows.py:pair", "--name", "pair", env=env, cwd=project)
    assert deployed.returncode == 0, deployed.stderr
    with api(env) as client:
        run = client.create_run("pair", "pair")

    # When a worker with an empty cache fetches it, runs it and stores its pickled result
    worker = conveyor(
        "worker",
        "start",
        "--burst",
        env={**env, "CONVEYOR_CACHE_DIR": str(tmp_path / "cache")},
        timeout=120,
    )

    # Then the run worked, and neither command printed the libraries' request dumps
    assert worker.returncode == 0, worker.stderr
    with api(env) as client:
        done = wait_for_run(client, run.id)
    assert done.state.value == "completed", done.error
    assert (done.result_ref or "").startswith(f"{platform}://{bucket}/")
    for output in (deployed.stderr, worker.stdout + worker.stderr):
        noise = [line for line in output.splitlines() if any(m in line for m in LIBRARY_LINES)]
        assert noise == [], output
    assert "Traceback" not in worker.stderr


def test_deploy_from_an_unreachable_gcs_endpoint_prints_one_error_line(tmp_path: Path) -> None:
    # Given an emulator address where nothing listens, and no retry budget of Conveyor's own
    # (gcsfs still retries for ~40 s on its own; both commands run at the same time)
    env = command_env(
        STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}",
        CONVEYOR_NETWORK_RETRY_SECONDS="0",
    )
    args = ["deploy", "flows.py:hello", "--name", "g", "--source", "gs://gflows/flows"]

    # When it is deployed, and deployed with --debug
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", *debug, *args],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for debug in ([], ["--debug"])
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    plain, debug = results

    # Then the plain command prints Conveyor's error (and its hint) and nothing of gcsfs
    assert "could not be reached" in one_line_error(plain)
    assert [line for line in plain.stderr.splitlines() if not line.startswith("hint: ")] == [
        next(line for line in plain.stderr.splitlines() if line.startswith("error: "))
    ]
    # And --debug shows what gcsfs said and the tracebacks
    assert debug.returncode != 0
    assert "gcsfs" in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
