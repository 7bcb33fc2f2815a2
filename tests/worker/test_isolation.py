"""What a run can reach: no worker settings in its environment (flow and pull steps), a clear
error for an unusable ``--run-as``, and nothing outside its control directory taken as its
output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conveyor._jobvars import child_environ
from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.errors import ConfigError
from conveyor.settings import Settings
from conveyor.worker.executors import Interrupt, RunSpec
from conveyor.worker.executors.base import ChildJob, Supervisor
from conveyor.worker.executors.isolation import RunAs, work_base
from conveyor.worker.executors.local import ProcessExecutor
from conveyor.worker.executors.workspace import worker_dir
from conveyor.worker.logs import RunLogs
from conveyor.worker.loop import _run_as
from conveyor.worker.options import WorkerOptions, from_argv
from fixtures.ports import wait_until
from fixtures.users import interpreter_for, throwaway_user  # noqa: F401

WORKER_SETTINGS = {
    "CONVEYOR_HOME": "/srv/conveyor",
    "CONVEYOR_SECRET_KEY": "k" * 44,
    "CONVEYOR_API_KEY": "api-key-value",
    "CONVEYOR_DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
    "CONVEYOR_CACHE_DIR": "/srv/cache",
    "conveyor_api_url": "http://127.0.0.1:1",
}


def test_child_environ_drops_every_worker_setting_and_keeps_the_rest() -> None:
    env = child_environ({**WORKER_SETTINGS, "PATH": "/usr/bin", "AWS_REGION": "eu-west-1"})
    assert env == {"PATH": "/usr/bin", "AWS_REGION": "eu-west-1"}


def test_flow_and_pull_step_see_no_worker_setting(
    run_child, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker whose environment holds its settings
    for key, value in WORKER_SETTINGS.items():
        monkeypatch.setenv(key, value)
    # When a run with a pull step that prints its environment runs a flow that does too
    script = "sh -c 'env | grep -i ^conveyor_ | sort | sed s/^/step:/ || true'"
    outcome, sink, _ = run_child(
        "env",
        {"name": "CONVEYOR_HOME"},
        pull_steps=[{"run_shell_script": {"script": script}}],
        env={"CONVEYOR_RUN_ID": "run-1"},
    )
    # Then neither saw any of them (the run's own variables are there)
    assert outcome.result is None  # the flow's os.environ.get("CONVEYOR_HOME")
    step_lines = [line for line in sink.messages("stdout") if line.startswith("step:")]
    assert step_lines == ["step:CONVEYOR_RUN_ID=run-1"]
    for value in WORKER_SETTINGS.values():
        assert value not in sink.text()


def test_run_as_refuses_an_unknown_user_root_and_in_process(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="no user 'no-such-user-zz' on this machine"):
        RunAs.lookup("no-such-user-zz")
    with pytest.raises(ConfigError, match="isolates nothing"):
        RunAs.lookup("root")
    options = WorkerOptions(run_as="nobody", in_process=True)
    with pytest.raises(ConfigError, match="--in-process"):
        _run_as(options, settings)
    assert from_argv(["--run-as", "nobody"]).run_as == "nobody"
    assert WorkerOptions.from_json(options.to_json()).run_as == "nobody"


class _Outcome(Supervisor):
    def launch(self, job, *, logs, wake):  # type: ignore[no-untyped-def] - not used
        raise NotImplementedError


def test_output_outside_the_control_directory_or_through_a_link_is_ignored(tmp_path: Path) -> None:
    # Given a child that names a result file outside its control directory, then one that
    # left a symlink to a worker file as its result
    control = tmp_path / "control"
    control.mkdir()
    secret = tmp_path / "secret.key"
    secret.write_text("worker key")
    job = ChildJob(
        run_id="r", entrypoint="f.py:f", parameters={}, workspace=tmp_path, control=control
    )
    output = {"status": "completed", "result": None, "result_file": "../secret.key"}
    (control / "output.json").write_text(json.dumps(output))
    assert _Outcome()._outcome(job, reason=None, returncode=0, spawned=0.0).result_file is None
    output["result_file"] = "result.pickle"
    (control / "output.json").write_text(json.dumps(output))
    os.symlink(secret, control / "result.pickle")
    assert _Outcome()._outcome(job, reason=None, returncode=0, spawned=0.0).result_file is None
    # ...and an output.json that is a fifo does not hang the worker
    (control / "output.json").unlink()
    os.mkfifo(control / "output.json")
    outcome = _Outcome()._outcome(job, reason=None, returncode=1, spawned=0.0)
    assert outcome.error == "child process exited with code 1 without reporting a result"


WHOAMI = """
import os, pathlib
from conveyor import flow

@flow
def whoami() -> dict:
    pathlib.Path("written-by-the-flow.txt").write_text("mine")
    return {"uid": os.getuid(), "groups": sorted(os.getgroups()), "owner": os.stat(".").st_uid,
            "home_var": "CONVEYOR_HOME" in os.environ}
"""


class _Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def write_logs(self, run_id: str, records: list[Any]) -> None:
        self.records.extend(records)


@pytest.mark.parametrize("mode", ["overlay", "links", "copy"])
def test_run_as_runs_each_flow_as_the_user_in_a_workspace_it_owns(
    mode: str,
    throwaway_user: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a process executor of a root worker with --run-as, making workspaces in one mode
    # (and spares on, which only copies use)
    python, extra = interpreter_for(throwaway_user)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(WHOAMI)
    run_as = RunAs.lookup(throwaway_user)
    base = Path(tempfile.mkdtemp(prefix="conveyor-run-as-", dir="/tmp"))
    os.chmod(base, 0o755)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    executor = ProcessExecutor(
        cache=cache,
        work_dir=worker_dir(work_base(base / "work"), shared=True),
        run_as=run_as,
        grace_seconds=1.0,
        workspace=mode,
    )
    executor.python = python[0]
    assert executor.workspace_mode() == mode
    spec = RunSpec(
        run_id="run-1",
        entrypoint="flows.py:whoami",
        source={"kind": "local", "path": str(project)},
        version=compute_version(project),
        pull_steps=({"run_shell_script": {"script": "sh -c 'echo step-uid=$(id -u)'"}},),
    )
    sink = _Sink()
    try:
        # When it runs the flow twice (a copy: the second time from the spare the first left)
        outcomes = []
        for attempt in (1, 2):
            if attempt == 2 and mode == "copy":
                assert executor.spares is not None
                assert wait_until(lambda: bool(executor.spares._ready), timeout=20)  # type: ignore[union-attr]
            logs = RunLogs(sink, "run-1").start()
            with executor.run(
                spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True
            ) as outcome:
                outcomes.append(outcome)
            logs.close()
        # Then each time the flow ran as the user, with only the user's groups, in a workspace
        # of its own that it could write, and without the worker's settings
        for outcome in outcomes:
            assert outcome.state is not None
            assert outcome.state.value == "completed", outcome.error
            assert outcome.result == {
                "uid": run_as.uid,
                "groups": sorted(run_as.groups),
                "owner": run_as.uid,
                "home_var": False,
            }
        if mode == "copy":
            assert outcomes[1].timings["fetch"] == 0.0  # taken from the spare
        else:
            assert executor.spares is not None
            assert not executor.spares._ready  # no spare copies: nothing to copy
        # ...and so did the pull step's command
        steps = [r.message for r in sink.records if r.message.startswith("step-uid=")]
        assert steps == [f"step-uid={run_as.uid}"] * 2
    finally:
        executor.close()
        shutil.rmtree(base, ignore_errors=True)
