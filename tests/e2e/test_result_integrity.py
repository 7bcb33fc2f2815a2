"""What is unpickled is exactly what the run stored: a run records the SHA-256 and size of its
pickled result, and ``conveyor runs result`` (a real subprocess) and `load_result` check the
stored bytes against that record before anything is unpickled.

- on the local result store and on S3 (moto on loopback): the result loads and equals what the
  flow returned;
- the object replaced by a pickle whose ``__reduce__`` runs a command: one-line error naming the
  ref, non-zero exit, the command never ran (with and without ``--output``);
- the object truncated: the same, refused before unpickling;
- a run without a recorded digest (stored before this check existed): refused with a hint, read
  only with ``--trust-unverified``.
"""

# ruff: noqa: F401  (fixtures imported from fixtures.blob_servers are parameters here)
from __future__ import annotations

import os
import pickle
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import IntegrityError
from conveyor.run_results import load_result
from conveyor.schemas import Run, RunState, StateUpdate
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from e2e.conftest import command_env, conveyor, ok, one_line_error
from fixtures.blob_servers import MotoServer, moto_server

pytestmark = pytest.mark.slow

FLOWS = """
from conveyor import flow


@flow
def numbers() -> set[int]:
    return {1, 2, 3}
"""


class Evil:
    """Unpickling it runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


def _run_numbers(settings: Settings, client: ConveyorClient, tmp_path: Path, **deploy: Any) -> Run:
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOWS)
    deployment = from_source(project, "flows.py:numbers").deploy(
        "numbers", settings=settings, client=client, **deploy
    )
    run = client.create_run(deployment.flow_name, deployment.name)
    options = WorkerOptions(pool="default", name="w1", lease_seconds=3.0, poll_seconds=0.2)
    Worker.from_settings(settings, client, options).work(burst=True)
    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED, done.error
    return done


def _forget_digest(settings: Settings, run_id: str) -> None:
    """Make ``run_id`` look like a run stored before results had a digest."""
    path = settings.effective_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as db:
        db.execute(
            "UPDATE runs SET result_sha256 = NULL, result_size = NULL WHERE id = ?", (run_id,)
        )
    db.close()


class LocalStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read(self, run: Run) -> bytes:
        return (self.settings.results_dir / run.id / "result.pickle").read_bytes()

    def write(self, run: Run, data: bytes) -> None:
        (self.settings.results_dir / run.id / "result.pickle").write_bytes(data)


class S3Store:
    def __init__(self, moto: MotoServer, bucket: str) -> None:
        self.s3 = moto.client()
        self.bucket = bucket

    def key(self, run: Run) -> str:
        assert run.result_ref is not None
        prefix = f"s3://{self.bucket}/"
        assert run.result_ref.startswith(prefix)
        return run.result_ref.removeprefix(prefix)

    def read(self, run: Run) -> bytes:
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key(run))["Body"].read()
        return data

    def write(self, run: Run, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(run), Body=data)


@pytest.fixture(params=["local", "s3"])
def stored(
    request: pytest.FixtureRequest,
    settings: Settings,
    client: ConveyorClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Run, Any, dict[str, str]]:
    """A completed run of ``numbers`` with its pickled result in the store of the param, the
    store's handle, and the environment for ``conveyor`` subprocesses."""
    if request.param == "local":
        return _run_numbers(settings, client, tmp_path), LocalStore(settings), command_env()
    moto: MotoServer = request.getfixturevalue("moto_server")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint)
    bucket = moto.new_bucket()
    run = _run_numbers(settings, client, tmp_path, result_storage=f"s3://{bucket}/res")
    assert run.result_ref == f"s3://{bucket}/res/{run.id}/result.pickle"
    return run, S3Store(moto, bucket), command_env()


def test_the_stored_result_loads_and_equals_what_the_flow_returned(
    stored: tuple[Run, Any, dict[str, str]], settings: Settings, client: ConveyorClient
) -> None:
    run, store, env = stored
    data = store.read(run)

    assert run.result_size == len(data)
    assert run.result_sha256 is not None
    assert len(run.result_sha256) == 64
    assert load_result(run, settings=settings, client=client) == {1, 2, 3}
    assert ok(conveyor("runs", "result", run.id, env=env)).strip() == "{1, 2, 3}"
    assert "result check" in ok(conveyor("runs", "inspect", run.id, env=env))


def test_a_replaced_result_is_refused_before_it_is_unpickled(
    stored: tuple[Run, Any, dict[str, str]],
    settings: Settings,
    client: ConveyorClient,
    tmp_path: Path,
) -> None:
    # Given a completed run whose stored result was replaced by a pickle that runs a command
    run, store, env = stored
    marker = tmp_path / "PWNED"
    store.write(run, pickle.dumps(Evil(marker)))

    # When the operator asks for it (printed, written to a file, or from Python)
    printed = conveyor("runs", "result", run.id, env=env)
    written = conveyor("runs", "result", run.id, "--output", str(tmp_path / "r.pickle"), env=env)
    with pytest.raises(IntegrityError) as raised:
        load_result(run, settings=settings, client=client)

    # Then each is refused in one line naming the ref, and the command never ran
    for result in (printed, written):
        line = one_line_error(result)
        assert run.result_ref in line
        assert "refusing to unpickle" in line
    assert run.result_ref in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "r.pickle").exists()
    assert not marker.exists()


def test_a_truncated_result_is_refused(stored: tuple[Run, Any, dict[str, str]]) -> None:
    run, store, env = stored
    data = store.read(run)
    store.write(run, data[: len(data) // 2])

    line = one_line_error(conveyor("runs", "result", run.id, env=env))

    assert run.result_ref in line
    assert f"the run stored {len(data)}" in line


def test_same_size_other_bytes_are_refused_by_digest(
    stored: tuple[Run, Any, dict[str, str]],
) -> None:
    run, store, env = stored
    data = store.read(run)
    store.write(run, pickle.dumps({1, 2, 4}, protocol=pickle.HIGHEST_PROTOCOL))
    assert len(store.read(run)) == len(data)

    line = one_line_error(conveyor("runs", "result", run.id, env=env))

    assert run.result_ref in line
    assert "does not match the digest" in line


def test_a_result_without_a_recorded_digest_is_refused_unless_trusted(
    stored: tuple[Run, Any, dict[str, str]],
    settings: Settings,
    client: ConveyorClient,
    tmp_path: Path,
) -> None:
    # Given a run that looks stored before results carried a digest, its object replaced
    run, store, env = stored
    _forget_digest(settings, run.id)
    old = client.get_run(run.id)
    assert old.result_ref == run.result_ref
    assert old.result_sha256 is None
    marker = tmp_path / "PWNED"
    store.write(run, pickle.dumps(Evil(marker)))

    # When it is asked for without, then with, --trust-unverified
    refused = conveyor("runs", "result", run.id, env=env)
    with pytest.raises(IntegrityError, match="no recorded digest"):
        load_result(old, settings=settings, client=client)
    store.write(run, pickle.dumps({1, 2, 3}))
    trusted = ok(conveyor("runs", "result", run.id, "--trust-unverified", env=env))

    # Then it is refused with a hint (nothing ran), and read only when trusted explicitly
    line = one_line_error(refused)
    assert run.result_ref in line
    assert "no recorded digest" in line
    assert "--trust-unverified" in refused.stderr
    assert not marker.exists()
    assert trusted.strip() == "{1, 2, 3}"


def test_a_json_result_stays_on_the_run_and_prints_as_before(
    settings: Settings, client: ConveyorClient, tmp_path: Path
) -> None:
    project = tmp_path / "json-project"
    project.mkdir()
    (project / "flows.py").write_text(
        "from conveyor import flow\n\n\n@flow\ndef shout() -> str:\n    return 'HELLO'\n"
    )
    deployment = from_source(project, "flows.py:shout").deploy(
        "shout", settings=settings, client=client
    )
    run = client.create_run(deployment.flow_name, deployment.name)
    options = WorkerOptions(pool="default", name="w1", lease_seconds=3.0, poll_seconds=0.2)
    Worker.from_settings(settings, client, options).work(burst=True)

    done = client.get_run(run.id)
    assert done.result == "HELLO"
    assert done.result_ref is None
    assert done.result_sha256 is None
    assert ok(conveyor("runs", "result", run.id, env=command_env())).strip() == '"HELLO"'


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"result_sha256": "0" * 64, "result_size": 3}, "describe a result_ref"),
        ({"result_ref": "local:r/result.pickle", "result_sha256": "0" * 64}, "go together"),
        (
            {"result_ref": "local:r/result.pickle", "result_sha256": "X" * 64, "result_size": 1},
            "not a SHA-256",
        ),
    ],
)
def test_a_report_with_a_bad_result_record_is_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        StateUpdate(worker="w1", state=RunState.COMPLETED, **fields)
