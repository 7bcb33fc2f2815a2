"""Fixtures for the first-generation storage tests: a client of the embedded server, workers
run in this process (claiming in burst mode, each run in a real child process), flow scripts
run as real ``python`` processes, and the real servers (git smart HTTP, the Dropbox stand-in)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.schemas import Run
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from fixtures.dropbox_server import DropboxServer, dropbox  # noqa: F401
from fixtures.git_server import GitHttpServer, git_http, git_repos_root, repos  # noqa: F401

__all__ = ["DropboxServer", "GitHttpServer"]


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


def run_worker(
    settings: Settings,
    client: ConveyorClient,
    *,
    labels: Sequence[str] = (),
    replace_labels: bool = False,
) -> Worker:
    """A worker (an agent with ``labels``) that claims until its pool is empty, then stops.

    ``replace_labels``: the worker carries exactly ``labels`` (not its host name): a worker on
    another machine.
    """
    worker = Worker.from_settings(
        settings,
        client,
        WorkerOptions(name="agent", poll_seconds=0.1, labels=tuple(labels)),
    )
    if replace_labels:
        worker.labels = list(labels)
    worker.work(burst=True)
    return worker


def run_and_wait(
    settings: Settings, client: ConveyorClient, flow_name: str, name: str = "default", **kw: object
) -> Run:
    """Create a run of ``flow_name/name``, let a worker run it, return the run."""
    created = client.create_run(flow_name, name)
    run_worker(settings, client, **kw)  # type: ignore[arg-type]
    return client.get_run(created.id)


def write_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def python(script: Path, *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``python script`` (this test's environment) and return its stdout; it must succeed."""
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_logs(client: ConveyorClient, run_id: str) -> str:
    return "\n".join(line.message for line in client.read_logs(run_id))
