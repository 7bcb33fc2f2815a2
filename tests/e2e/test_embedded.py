"""The real command line on the embedded default (SQLite under CONVEYOR_HOME, no server)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from pathlib import Path

import pytest

from conveyor.bundles import compute_version
from conveyor.errors import ObjectNotFound
from e2e.conftest import api, command_env, conveyor, ok, one_line_error, wait_for_run
from fixtures.ports import free_port, wait_until
from fixtures.procs import alive
from fixtures.small_disk import SmallDisk, small_disk  # noqa: F401

pytestmark = pytest.mark.slow

_DEPLOYED = re.compile(r"deployment (\S+)/(\S+) version (sha256-[0-9a-f]{64}) \(revision (\d+)\)")


def test_deploy_run_watch_and_code_of_a_pinned_version(project: Path, background, tmp_path) -> None:
    # Given a deployment of the project folder (the default source: the current folder)
    env = command_env()
    out = ok(conveyor("deploy", "flows.py:hello", "--name", "e2e", env=env, cwd=project))
    match = _DEPLOYED.search(out)
    assert match is not None, out
    assert match.group(1, 2, 4) == ("hello", "e2e", "1")
    version = match.group(3)
    assert version == compute_version(project)
    # ...and the folder edited after the deploy
    (project / "helpers.py").write_text("def shout(text):\n    return 'EDITED'\n")
    worker = background("worker", "start", env=env, name="worker")
    # When the deployment runs, watched
    watched = conveyor("run", "hello/e2e", "--param", "name=Ada", "--watch", env=env, timeout=90)
    # Then the deployed version ran, its output streamed, and the command exits 0
    assert watched.returncode == 0, watched.stdout + watched.stderr
    run_id = watched.stdout.splitlines()[0].strip()
    assert "hello Ada" in watched.stdout
    assert "logged Ada" in watched.stdout
    assert f"run {run_id} completed" in watched.stdout
    assert '"HELLO ADA"' in watched.stdout
    with api(env) as client:
        run = client.get_run(run_id)
    assert run.version == version
    assert {"queue", "fetch", "start", "run"} <= set(run.timings)
    # ...and `runs code` writes exactly that version, not the edited folder
    out_dir = tmp_path / "code"
    ok(conveyor("runs", "code", run_id, "--output", str(out_dir), env=env))
    assert compute_version(out_dir) == version
    assert "upper()" in (out_dir / "helpers.py").read_text()
    # ...and SIGTERM stops the idle worker cleanly
    assert worker.stop(sig=signal.SIGTERM) == 0
    assert "worker stopped" in worker.output()


def test_bad_input_gets_one_line_errors_and_writes_nothing(project: Path) -> None:
    env = command_env()
    # A flow that does not load: the import error, no deployment, no bundle
    error = one_line_error(
        conveyor("deploy", "flows.py:nope", "--name", "bad", env=env, cwd=project)
    )
    assert "flows.py does not define 'nope'" in error
    storage = Path(env["CONVEYOR_HOME"]) / "storage"
    assert not storage.exists() or not any(storage.iterdir())
    # An unknown deployment
    error = one_line_error(conveyor("run", "hello/missing", env=env))
    assert "hello/missing" in error
    # Bad parameters: unknown, and of the wrong type; no run is created
    ok(conveyor("deploy", "flows.py:hello", "--name", "e2e", env=env, cwd=project))
    error = one_line_error(conveyor("run", "hello/e2e", "--param", "nmae=Ada", env=env))
    assert "nmae" in error
    error = one_line_error(conveyor("run", "hello/e2e", "--param", "name=3", env=env))
    assert "name" in error
    with api(env) as client:
        assert client.list_runs() == []
        with pytest.raises(ObjectNotFound):
            client.get_deployment("hello", "bad")


def test_flow_that_raises_fails_with_its_traceback_in_the_logs(project: Path, background) -> None:
    env = command_env()
    ok(conveyor("deploy", "flows.py:boom", "--name", "e2e", env=env, cwd=project))
    background("worker", "start", env=env, name="worker")

    watched = conveyor("run", "boom/e2e", "--watch", env=env, timeout=90)

    assert watched.returncode == 1
    run_id = watched.stdout.splitlines()[0].strip()
    assert f"run {run_id} failed" in watched.stdout
    assert "error: ValueError: kaboom" in watched.stderr
    logs = ok(conveyor("runs", "logs", run_id, env=env))
    assert "Traceback (most recent call last)" in logs
    assert 'raise ValueError("kaboom")' in logs


def test_unreachable_server_is_a_one_line_error_and_writes_nothing(project: Path) -> None:
    env = command_env(CONVEYOR_API_URL=f"http://127.0.0.1:{free_port()}")

    deploy = conveyor("deploy", "flows.py:hello", "--name", "e2e", env=env, cwd=project)
    run = conveyor("run", "hello/e2e", env=env)

    assert "127.0.0.1" in one_line_error(deploy)
    assert "127.0.0.1" in one_line_error(run)
    storage = Path(env["CONVEYOR_HOME"]) / "storage"
    assert not storage.exists() or not any(storage.iterdir())


def test_burst_worker_exits_when_the_pool_is_empty(project: Path, background) -> None:
    env = command_env()
    ok(conveyor("deploy", "flows.py:hello", "--name", "e2e", env=env, cwd=project))
    run_ids = [ok(conveyor("run", "hello/e2e", env=env)).strip() for _ in range(2)]

    worker = background("worker", "start", "--burst", env=env, name="worker")

    assert worker.wait(60) == 0
    with api(env) as client:
        for run_id in run_ids:
            assert wait_for_run(client, run_id, timeout=1).state.value == "completed"


def test_a_worker_that_stops_is_offline_at_once_in_workers_ls(project: Path, background) -> None:
    # Given a queued run, and a burst worker that ran it and exited
    env = command_env()
    ok(conveyor("deploy", "flows.py:hello", "--name", "e2e", env=env, cwd=project))
    ok(conveyor("run", "hello/e2e", env=env))
    burst = background("worker", "start", "--burst", "--name", "burst", env=env, name="burst")
    assert burst.wait(60) == 0
    # ...and a long-running worker, online, then stopped with Ctrl-C
    idle = background("worker", "start", "--name", "idle", env=env, name="idle")

    def statuses() -> dict[str, str]:
        listed = json.loads(ok(conveyor("workers", "ls", "--json", env=env)))
        return {worker["name"]: worker["status"] for worker in listed}

    assert wait_until(lambda: statuses().get("idle") == "online", timeout=60), idle.output()
    assert idle.stop(sig=signal.SIGINT) == 0
    # Then `workers ls` shows both offline now, not when their heartbeats age out (30 s)
    assert statuses() == {"burst": "offline", "idle": "offline"}
    table = ok(conveyor("workers", "ls", env=env))
    assert "online" not in table


def test_a_killed_worker_takes_the_flows_own_subprocesses_with_it(
    project: Path, background, tmp_path: Path
) -> None:
    # Given a worker running a flow that waits on a subprocess it started
    env = command_env()
    ok(conveyor("deploy", "flows.py:waits_on_grandchild", "--name", "k", env=env, cwd=project))
    worker = background("worker", "start", env=env, name="worker")
    marker = tmp_path / "grandchild"
    ok(conveyor("run", "waits-on-grandchild/k", "--param", f"marker={marker}", env=env))
    assert wait_until(lambda: marker.exists() and marker.read_text().strip() != "", timeout=60)
    grandchild = int(marker.read_text())
    assert alive(grandchild)
    # When the worker is SIGKILLed mid-run
    worker.stop(sig=signal.SIGKILL)
    # Then that subprocess dies too: nothing of the run goes on beside a retry on another worker
    assert wait_until(lambda: not alive(grandchild), timeout=5)
    # ...and the next worker on this machine takes down what the killed one left (its mounts)
    ok(conveyor("worker", "start", "--burst", env=env))
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def _fill(path: Path) -> None:
    """Write ``path`` until its disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            while _written(fd, size):
                pass
    finally:
        os.close(fd)


def _written(fd: int, size: int) -> bool:
    try:
        os.write(fd, b"\0" * size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False
    return True


def test_a_full_disk_under_the_worker_is_one_line_on_the_run_and_later_runs_complete(
    project: Path,
    background,
    small_disk: SmallDisk,  # noqa: F811
) -> None:
    # Given a worker whose work directory is on a small disk, and that disk full
    env = command_env()
    ok(conveyor("deploy", "flows.py:hello", "--name", "disk", env=env, cwd=project))
    work = small_disk.path / "work"
    worker = background("worker", "start", "--work-dir", str(work), env=env, name="worker")
    assert wait_until(lambda: "worker started" in worker.output(), timeout=60)
    filler = small_disk.path / "filler"
    _fill(filler)
    # When a run comes
    with api(env) as client:
        run = wait_for_run(client, client.create_run("hello", "disk").id, timeout=60)
        messages = [line.message for line in client.read_logs(run.id)]
    # Then it crashed with one line that says the worker's disk is full and where, and a hint;
    # no traceback in its logs
    assert run.state.value == "crashed"
    assert run.error is not None
    assert "the worker's disk is full" in run.error
    assert str(work) in run.error
    assert "No space left on device" in run.error
    assert not any("Traceback" in m for m in messages), messages
    assert any(m.startswith("hint: free space on the worker's disk") for m in messages)
    # ...and once there is room again, the next run completes on the same worker
    filler.unlink()
    with api(env) as client:
        again = wait_for_run(client, client.create_run("hello", "disk").id, timeout=60)
    assert (again.state.value, again.result) == ("completed", "HELLO WORLD")
    worker.stop()
