"""The server-side CLI families, run in-process through `conveyor.cli.main` (embedded default)."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from conveyor.cli import main
from conveyor.schemas import LogRecord, RunState, StateUpdate


@pytest.fixture(autouse=True)
def cli_database(backend, monkeypatch):
    """The CLI reads its settings from the environment: point it at the backend's database."""
    if backend.database_url:
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", backend.database_url)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys, *args: str):
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_pool_create_and_ls(capsys):
    assert run_cli(capsys, "pool", "create", "gpu", "--type", "process")[:2] == (
        0,
        "created pool gpu (type process)\n",
    )
    assert [p["name"] for p in as_json(capsys, "pool", "ls")] == ["default", "gpu"]
    code, out, _ = run_cli(capsys, "pools", "ls")
    assert code == 0
    assert "gpu" in out
    assert "default" in out
    code, _, err = run_cli(capsys, "pool", "create", "gpu")
    assert (code, err) == (1, "error: pool 'gpu' already exists\n")


def test_deployments_ls_inspect_versions(capsys, deploy):
    deploy()
    deploy(version="sha256-" + "b" * 64)
    [listed] = as_json(capsys, "deployments", "ls")
    assert (listed["flow_name"], listed["name"], listed["revision"]) == ("hello", "prod", 2)
    code, out, _ = run_cli(capsys, "deployments", "inspect", "hello/prod")
    assert code == 0
    assert "sha256-bbbb" in out
    assert "flows.py:hello" in out
    assert as_json(capsys, "deployments", "inspect", "hello/prod")["revision"] == 2
    versions = as_json(capsys, "deployments", "versions", "hello/prod")
    assert [v["revision"] for v in versions] == [2, 1]
    code, _, err = run_cli(capsys, "deployments", "inspect", "hello/nope")
    assert code == 1
    assert err.splitlines() == [
        "error: deployment 'hello/nope' not found",
        "hint: conveyor deployments ls",
    ]
    code, _, err = run_cli(capsys, "deployments", "versions", "no-slash")
    assert (code, err.splitlines()[0]) == (
        1,
        "error: 'no-slash' is not a deployment: expected FLOW/NAME",
    )


def test_runs_ls_inspect_cancel(capsys, deploy, api):
    deploy(retries=1)
    first = api.create_run("hello", "prod", parameters={"n": 7})
    second = api.create_run("hello", "prod")
    listed = as_json(capsys, "runs", "ls", "--deployment", "hello/prod")
    assert [r["id"] for r in listed] == [second.id, first.id]
    code, out, _ = run_cli(capsys, "runs", "ls")
    assert code == 0
    assert first.id[:8] in out
    assert "scheduled" in out
    inspected = as_json(capsys, "runs", "inspect", first.id[:8])
    assert (inspected["id"], inspected["parameters"]) == (first.id, {"n": 7})
    code, out, _ = run_cli(capsys, "runs", "inspect", first.id)
    assert code == 0
    assert "hello/prod" in out
    assert '{"n": 7}' in out
    code, out, _ = run_cli(capsys, "runs", "cancel", first.id[:8])
    assert (code, out) == (0, f"cancelled run {first.id}\n")
    assert [r["id"] for r in as_json(capsys, "runs", "ls", "--state", "cancelled")] == [first.id]
    code, _, err = run_cli(capsys, "runs", "ls", "--state", "sleeping")
    assert code == 1
    assert err.startswith("error: unknown state 'sleeping'")


def test_runs_inspect_shows_attempts(capsys, deploy, api):
    deploy(retries=1)
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.FAILED, error="boom"))
    code, out, _ = run_cli(capsys, "runs", "inspect", run.id)
    assert code == 0
    assert "attempts" in out
    assert "failed" in out
    assert "boom" in out
    assert "2 of 2" in out


def test_runs_logs_and_follow_until_the_run_ends(capsys, deploy, api):
    # Given a running run with two log lines (one that looks like Rich markup)
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))
    now = datetime.now(UTC)
    api.write_logs(
        run.id, [LogRecord(timestamp=now, message="hello [bold]x[/bold]", stream="stdout")]
    )
    api.write_logs(run.id, [LogRecord(timestamp=now, message="second", level="WARNING")])
    code, out, _ = run_cli(capsys, "runs", "logs", run.id)
    assert code == 0
    assert "hello [bold]x[/bold]" in out
    assert "WARNING" in out
    assert "second" in out

    # When following, and the worker logs more and completes a moment later
    def finish() -> None:
        time.sleep(0.6)
        api.write_logs(run.id, [LogRecord(timestamp=datetime.now(UTC), message="third")])
        api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.COMPLETED))

    thread = threading.Thread(target=finish)
    thread.start()
    started = time.monotonic()
    code, out, _ = run_cli(capsys, "runs", "logs", run.id, "--follow", "--after", "2")
    thread.join()
    # Then it prints only the new line and returns once the run is final
    assert code == 0
    assert "third" in out
    assert "second" not in out
    assert 0.5 < time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (RunState.COMPLETED, 0),
        (RunState.FAILED, 1),
        (RunState.CRASHED, 1),
        (RunState.CANCELLED, 1),
    ],
)
def test_runs_logs_follow_exits_as_run_watch_does(capsys, deploy, api, final, code):
    # Given a running run
    deploy()
    run = api.create_run("hello", "prod")
    api.claim_run("default", worker="w1")
    api.set_run_state(run.id, StateUpdate(worker="w1", state=RunState.RUNNING))

    # When it ends in ``final`` while `runs logs --follow` follows it
    def finish() -> None:
        time.sleep(0.3)
        api.write_logs(run.id, [LogRecord(timestamp=datetime.now(UTC), message="last words")])
        if final is RunState.CANCELLED:
            api.cancel_run(run.id)
            api.set_run_state(run.id, StateUpdate(worker="w1", state=final))
        else:
            api.set_run_state(run.id, StateUpdate(worker="w1", state=final, error="boom"))

    thread = threading.Thread(target=finish)
    thread.start()
    got, out, err = run_cli(capsys, "runs", "logs", run.id, "--follow")
    thread.join()
    # Then it exits 0 only for a completed run, as `conveyor run --watch` does
    assert api.get_run(run.id).state is final
    assert "last words" in out
    assert got == code, err
    # ...and printing the logs of the final run without --follow still exits 0
    assert run_cli(capsys, "runs", "logs", run.id)[0] == 0


def test_secret_set_reads_stdin_and_never_prints_the_value(capsys, monkeypatch, api):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cr3t-value\n"))
    code, out, err = run_cli(capsys, "secret", "set", "API_TOKEN")
    assert (code, out) == (0, "stored secret API_TOKEN\n")
    assert api.get_secret("API_TOKEN") == "s3cr3t-value"
    code, out, _ = run_cli(capsys, "secret", "ls")
    assert code == 0
    assert "API_TOKEN" in out
    assert "s3cr3t" not in out
    assert "s3cr3t" not in json.dumps(as_json(capsys, "secrets", "ls"))
    assert run_cli(capsys, "secret", "rm", "API_TOKEN")[:2] == (0, "deleted secret API_TOKEN\n")
    assert api.get_secret("API_TOKEN") is None
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "secret", "set", "EMPTY")
    assert code == 1
    assert err.startswith("error: no value given for secret 'EMPTY'")


def test_workers_ls(capsys, api):
    code, out, _ = run_cli(capsys, "workers", "ls")
    assert code == 0
    assert "no workers yet" in out
    api.worker_heartbeat("w1", pool="default", labels=["gpu"], limit=4, running=2)
    [worker] = as_json(capsys, "workers", "ls")
    assert (worker["name"], worker["status"], worker["running"]) == ("w1", "online", 2)
    code, out, _ = run_cli(capsys, "workers", "ls")
    assert code == 0
    assert "w1" in out
    assert "online" in out
    assert "2/4" in out


def test_runs_code_writes_the_exact_version_the_run_used(capsys, tmp_path, deploy, api):
    # Given a folder deployed (and pushed to the bundle store) as version v1
    from conveyor.sources.store import BundleStore

    folder = tmp_path / "project"
    (folder / "pkg").mkdir(parents=True)
    (folder / "flows.py").write_text("def hello(n):\n    return n\n")
    (folder / "pkg" / "util.py").write_text("VALUE = 1\n")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    store = BundleStore(tmp_path / "store")
    v1 = store.push(folder)
    deploy(source=store.to_spec(), version=v1)
    run = api.create_run("hello", "prod")
    # When the folder changes afterwards
    (folder / "pkg" / "util.py").write_text("VALUE = 2\n")
    # Then `runs code` writes v1, not the folder's current code
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "runs", "code", run.id[:8], "--output", str(out_dir))
    assert code == 0, err
    assert "wrote sha256-" in out
    assert (out_dir / "pkg" / "util.py").read_text() == "VALUE = 1\n"
    assert (out_dir / "flows.py").read_text() == "def hello(n):\n    return n\n"
    assert (out_dir / "run.sh").stat().st_mode & 0o111
    (out_dir / "flows.py").write_text("editable\n")  # a writable copy, not the cache
    # And it refuses to write into a non-empty directory
    code, _, err = run_cli(capsys, "runs", "code", run.id, "--output", str(out_dir))
    assert code == 1
    assert "not an empty directory" in err
