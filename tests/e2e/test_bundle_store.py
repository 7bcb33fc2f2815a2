"""A team with one server and workers elsewhere: a local folder deployed with
``CONVEYOR_BUNDLE_STORE=server`` runs on a worker whose ``CONVEYOR_HOME`` is another directory
(a second machine in all but name), and a machine-local store used with a remote server labels
the deployment with the deploying host."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import Server, api, command_env, conveyor, ok, server_env, wait_for_run
from worker.flows_project import write_project

pytestmark = [pytest.mark.slow, pytest.mark.service]

KEY = "bundle-store-key-2231"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bundle-server")
    server = Server.start(server_env(home, CONVEYOR_API_KEY=KEY), log=home / "server.log")
    try:
        yield server
    finally:
        server.stop()


def machine(root: Path, server: Server, **values: str) -> dict[str, str]:
    """The environment of a separate machine: its own HOME and CONVEYOR_HOME."""
    return command_env(
        HOME=str(root),
        CONVEYOR_HOME=str(root / ".conveyor"),
        CONVEYOR_API_URL=server.url,
        CONVEYOR_API_KEY=KEY,
        **values,
    )


def test_a_folder_deployed_to_the_server_store_runs_on_another_machine(
    server: Server, tmp_path: Path, background
) -> None:
    # Given a laptop deploying a local folder with the server as bundle store
    laptop = machine(tmp_path / "laptop", server, CONVEYOR_BUNDLE_STORE="server")
    project = write_project(tmp_path / "laptop-project")
    out = ok(conveyor("deploy", "flows.py:hello", "--name", "shared", env=laptop, cwd=project))
    assert "deployment hello/shared version sha256-" in out
    server_storage = Path(server.env["CONVEYOR_HOME"]) / "storage"
    stored = {p.name: p.stat().st_mtime_ns for p in server_storage.iterdir()}
    assert len(stored) == 1

    # When the laptop redeploys unchanged code, nothing is uploaded again
    ok(conveyor("deploy", "flows.py:hello", "--name", "shared", env=laptop, cwd=project))
    assert {p.name: p.stat().st_mtime_ns for p in server_storage.iterdir()} == stored

    # When the folder is gone and a worker on another "machine" runs the deployment
    shutil.rmtree(project)
    worker = machine(tmp_path / "worker-host", server)
    with api(laptop) as client:
        deployment = client.get_deployment("hello", "shared")
        assert deployment.source == {"kind": "store", "url": "server"}
        assert "labels" not in deployment.job_variables  # anyone may run it
        run = client.create_run("hello", "shared", parameters={"name": "Ada"})
    background("worker", "start", "--burst", env=worker, name="worker").wait(timeout=60)

    # Then it ran the deployed bytes, fetched from the server into the worker's own cache
    with api(worker) as client:
        done = wait_for_run(client, run.id)
    assert done.state.value == "completed", done.error
    assert done.result == "HELLO ADA"
    cache = tmp_path / "worker-host" / ".conveyor" / "cache"
    assert list(cache.glob(f"*/{deployment.version}/flows.py"))
    assert not (tmp_path / "laptop" / ".conveyor" / "storage").exists()


def test_a_machine_local_store_with_a_remote_server_is_labelled_with_the_host(
    server: Server, tmp_path: Path
) -> None:
    # Given a deploy to the remote server whose code stays in this machine's own store
    laptop = machine(tmp_path / "laptop", server)
    project = write_project(tmp_path / "project")
    result = conveyor("deploy", "flows.py:hello", "--name", "local-only", env=laptop, cwd=project)
    ok(result)
    host = socket.gethostname()

    # Then the deploy says why and how to share the code, and the deployment carries the label
    assert f"labelled {host!r}" in result.stderr
    assert "CONVEYOR_BUNDLE_STORE=server" in result.stderr
    with api(laptop) as client:
        deployment = client.get_deployment("hello", "local-only")
        assert host in deployment.job_variables["labels"]
        run = client.create_run("hello", "local-only")
        # a worker without the host's label never claims it; one on this host does
        assert client.claim_run("default", worker="elsewhere", labels=["gpu"]) is None
        claimed = client.claim_run("default", worker="here", labels=[host])
        assert claimed is not None
        assert claimed.id == run.id
