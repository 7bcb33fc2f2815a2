"""Fixtures for the first-generation storage tests: a client of the embedded server, workers
run in this process (claiming in burst mode, each run in a real child process), flow scripts
run as real ``python`` processes, and the real servers (git smart HTTP, the Dropbox stand-in,
moto's S3, Azurite, fake-gcs-server with a stand-in of Google's token endpoint, and the
docker-registry)."""

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
from fixtures.blob_servers import (  # noqa: F401
    Azurite,
    FakeGcs,
    MotoServer,
    azurite,
    fake_gcs,
    moto_server,
)
from fixtures.dropbox_server import DropboxServer, dropbox  # noqa: F401
from fixtures.gcp_oauth_server import GcpOAuthServer, gcp_oauth  # noqa: F401
from fixtures.git_server import GitHttpServer, git_http, git_repos_root, repos  # noqa: F401
from fixtures.registry import Registry, basic_registry, registry  # noqa: F401

__all__ = [
    "Azurite",
    "DropboxServer",
    "FakeGcs",
    "GcpOAuthServer",
    "GitHttpServer",
    "MotoServer",
    "Registry",
]


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


TIMESTAMP = r"\d{4}-\d{2}-\d{2}t\d{2}-\d{2}-\d{2}-\d{6}-00-00"
"""A first-generation storage's default flow key suffix (``slugify(now)``)."""

AFTER_SEED = """
# --- the test's additions after the snippet: tasks, then registration
print("BUILT", flow.storage.flows[flow.name])
from conveyor import task

@task
def shout(text: str) -> str:
    return text.upper()

@task
def measure(text: str) -> tuple[str, int]:
    return (text, len(text))

with flow:
    shout("hello")
    measure("hello")

deployment = flow.register(labels=["seed"])
print("STORED", flow.storage.flows[flow.name])
print("DEPLOYED", deployment.flow_name, deployment.name, deployment.version)
"""
"""What the blob storages' tests add after the document's snippet: two tasks, registration."""


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


def leaks(root: Path, needles: Sequence[str], *texts: str) -> list[str]:
    """Where any of ``needles`` appears: files under ``root`` (the database, logs, caches) and
    the ``texts`` (command output) — shown by place, never by value."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}" for needle in needles if needle.encode() in data]
    found += [f"output {i}" for i, text in enumerate(texts) for n in needles if n in text]
    return found


def clear_filesystems() -> None:
    """Forget the fsspec filesystems this process made (fsspec keeps one instance per set of
    options, with the credentials its session found when it was made)."""
    import importlib

    for module, cls in (
        ("s3fs", "S3FileSystem"),
        ("gcsfs", "GCSFileSystem"),
        ("conveyor.sources.blob._gcs", "GCSFileSystem"),  # gcsfs's, with a retry count
        ("adlfs", "AzureBlobFileSystem"),
    ):
        try:
            getattr(importlib.import_module(module), cls).clear_instance_cache()
        except ImportError:
            pass


@pytest.fixture
def fresh_filesystems() -> Iterator[None]:
    """No fsspec filesystem kept from another test: each is built from this test's credentials."""
    clear_filesystems()
    yield
    clear_filesystems()
