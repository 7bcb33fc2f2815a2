"""The process executor: one real child per run; how each way of ending becomes a state."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest

from conveyor.schemas import RunState
from conveyor.worker.executors import Interrupt, StopReason
from conveyor.worker.executors.local import InProcessExecutor
from fixtures.ports import wait_until
from fixtures.procs import alive


def test_completed_run_returns_its_json_result_and_streams_every_output(run_child) -> None:
    outcome, logs, _ = run_child("hello", {"name": "Ada"})

    assert outcome.state is RunState.COMPLETED
    assert outcome.result == "HELLO ADA"  # helpers.py, a sibling module, was importable
    assert outcome.result_file is None
    assert outcome.error is None
    assert outcome.entered is not None
    assert outcome.finished is not None
    assert outcome.spawned <= outcome.entered <= outcome.finished
    assert "hello Ada" in logs.messages("stdout")
    assert "on stderr" in logs.messages("stderr")
    assert "logged Ada" in logs.messages("log")


def test_result_that_is_not_json_is_pickled_to_a_file(run_child) -> None:
    outcome, _, _ = run_child("point", {"x": 7})

    assert outcome.state is RunState.COMPLETED
    assert outcome.result is None
    assert outcome.result_file is not None
    data = outcome.result_file.read_bytes()
    assert b"Point" in data  # the class lives in the flow's module: loadable with its code only
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        pickle.loads(data)


def test_a_tuple_is_not_silently_turned_into_a_list(run_child) -> None:
    outcome, _, _ = run_child("pair")

    assert outcome.result is None
    assert outcome.result_file is not None
    assert pickle.loads(outcome.result_file.read_bytes()) == (1, 2)


def test_flow_that_raises_is_failed_with_one_line_error_and_traceback_in_logs(run_child) -> None:
    outcome, logs, _ = run_child("boom")

    assert outcome.state is RunState.FAILED
    assert outcome.error == "ValueError: kaboom"
    text = logs.text()
    assert "Traceback (most recent call last)" in text
    assert 'raise ValueError("kaboom")' in text


def test_sys_exit_is_a_failure_not_a_crash(run_child) -> None:
    outcome, _, _ = run_child("exits")

    assert outcome.state is RunState.FAILED
    assert outcome.error == "flow called sys.exit(3)"


def test_child_killed_by_a_signal_is_crashed(run_child) -> None:
    outcome, _, _ = run_child("die")

    assert outcome.state is RunState.CRASHED
    assert outcome.error == "child process was killed by SIGKILL"
    assert outcome.returncode == -signal.SIGKILL


def test_parameters_are_converted_to_the_declared_types(run_child) -> None:
    outcome, _, _ = run_child("on_date", {"day": "2024-02-29"})

    assert outcome.state is RunState.COMPLETED
    assert outcome.result == "date:2024-02-29"


def test_bad_parameter_fails_the_run_with_a_one_line_error(run_child) -> None:
    # (the server refuses such a value when the run is created; one that reaches a child anyway,
    # from a deployment stored before that check or a constraint no schema says, is one line)
    outcome, sink, _ = run_child("on_date", {"day": "not a date"})

    message = (
        "parameter 'day': 'not a date' is not a valid date or datetime, invalid character in year"
    )
    assert outcome.state is RunState.FAILED
    assert outcome.error == message
    assert f"flow run failed: {message}" in sink.messages()
    assert "Traceback" not in sink.text()


def test_async_flow_is_awaited(run_child) -> None:
    outcome, _, _ = run_child("doubled", {"x": 21})

    assert outcome.result == 42


def test_flow_that_does_not_load_fails_with_the_load_error(run_child) -> None:
    outcome, _, _ = run_child("missing")

    assert outcome.state is RunState.FAILED
    assert outcome.error is not None
    assert "missing" in outcome.error


def test_run_environment_reaches_the_flow(run_child) -> None:
    outcome, _, _ = run_child("env", {"name": "GREETING"}, env={"GREETING": "bonjour"})

    assert outcome.result == "bonjour"


def test_own_timeout_fires_first_with_a_clean_error(run_child) -> None:
    started = time.monotonic()
    outcome, _logs, _ = run_child("polite_timeout", timeout=5)

    assert outcome.state is RunState.FAILED
    assert outcome.error is not None
    assert "FlowTimeout" in outcome.error
    assert time.monotonic() - started < 5


def test_worker_kills_a_flow_that_outlives_its_timeout(run_child) -> None:
    # Given a flow that blocks SIGALRM, so its own timeout cannot fire
    started = time.monotonic()
    # When the run's timeout passes
    outcome, _, _ = run_child("deaf_timeout", timeout=1.5)
    # Then the worker killed it: failed, with a clear message, long before the flow's 30 s sleep
    assert outcome.state is RunState.FAILED
    assert outcome.error == "flow timed out after 1.5s"
    assert time.monotonic() - started < 10


def test_cancel_sends_sigterm(run_child, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    interrupt = Interrupt()
    threading.Thread(
        target=lambda: (
            wait_until(marker.exists, timeout=20) and interrupt.set(StopReason.CANCELLED)
        ),
        daemon=True,
    ).start()

    outcome, _, _ = run_child("sleepy", {"seconds": 60, "marker": str(marker)}, interrupt=interrupt)

    assert outcome.state is RunState.CANCELLED
    assert outcome.returncode == -signal.SIGTERM


def test_cancel_sends_sigkill_after_the_grace_period(run_child, tmp_path: Path) -> None:
    # Given a flow that ignores SIGTERM
    marker = tmp_path / "pid"
    interrupt = Interrupt()
    threading.Thread(
        target=lambda: (
            wait_until(marker.exists, timeout=20) and interrupt.set(StopReason.CANCELLED)
        ),
        daemon=True,
    ).start()
    started = time.monotonic()
    # When it is cancelled
    outcome, _, _ = run_child("stubborn", {"marker": str(marker)}, interrupt=interrupt)
    # Then it is killed after the 1 s grace period (not after its 60 s sleep)
    assert outcome.state is RunState.CANCELLED
    assert outcome.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 15
    assert not alive(int(marker.read_text()))


def test_processes_the_flow_left_behind_are_killed(run_child, tmp_path: Path) -> None:
    marker = tmp_path / "grandchild"

    outcome, _, _ = run_child("grandchild", {"marker": str(marker)})

    assert outcome.state is RunState.COMPLETED
    pid = int(marker.read_text())
    assert wait_until(lambda: not alive(pid), timeout=5)


def test_lost_lease_stops_the_child_and_reports_nothing(run_child, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    interrupt = Interrupt()
    threading.Thread(
        target=lambda: wait_until(marker.exists, timeout=20) and interrupt.set(StopReason.LOST),
        daemon=True,
    ).start()

    outcome, _, _ = run_child("sleepy", {"seconds": 60, "marker": str(marker)}, interrupt=interrupt)

    assert outcome.state is None


def test_many_lines_arrive_complete_and_in_order(run_child) -> None:
    outcome, logs, _ = run_child("chatty", {"lines": 2000})

    assert outcome.result == 2000
    assert logs.messages("stdout") == [f"line {i}" for i in range(2000)]


def test_in_process_executor_runs_the_same_child_code(run_child) -> None:
    cwd = os.getcwd()

    outcome, logs, _ = run_child("hello", {"name": "Bo"}, executor=InProcessExecutor)

    assert outcome.state is RunState.COMPLETED
    assert outcome.result == "HELLO BO"
    assert "logged Bo" in logs.messages()
    assert os.getcwd() == cwd


def test_the_flows_own_subprocesses_can_import_its_modules(run_child) -> None:
    outcome, _, _ = run_child("sibling_in_subprocess")

    assert outcome.result == "FROM A SUBPROCESS"


_PR_SET_CHILD_SUBREAPER = 36


def _own_children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


def test_a_run_that_ends_leaves_no_orphan_for_an_init_that_does_not_reap(run_child) -> None:
    # Given this process as the reaper of whatever the run orphans (as a worker that is a
    # container's PID 1 would be)
    libc = ctypes.CDLL(None, use_errno=True)
    before = _own_children()
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        # When a run ends normally
        outcome, _, _ = run_child("hello", {"name": "Ada"})
        # Then nothing of it (the child's lifeline watcher included) was left to be reaped here
        left = _own_children() - before
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in _own_children() - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    assert outcome.state is RunState.COMPLETED
    assert left == set()
