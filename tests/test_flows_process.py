"""Flow behaviour that needs a fresh process: the SIGALRM timeout on the main thread really
interrupts the function, and prints are not lost when no logging is configured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGALRM is POSIX only")


def run_script(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


def test_main_thread_timeout_interrupts_the_function(tmp_path: Path) -> None:
    # Given a flow that would write a marker after sleeping past its timeout
    # When it is called on the main thread of a fresh process
    result = run_script(
        tmp_path,
        """
        import signal, threading, time
        from pathlib import Path
        from conveyor import flow
        from conveyor.errors import FlowTimeout

        @flow(timeout_seconds=0.3)
        def sleepy():
            try:
                time.sleep(1.5)
                Path("marker").write_text("ran past the deadline")
            except Exception:
                Path("swallowed").write_text("a bare except caught the deadline")

        started = time.monotonic()
        try:
            sleepy()
        except FlowTimeout as exc:
            print("error:", exc)
        print("elapsed_ok:", time.monotonic() - started < 1.0)
        print("threads:", threading.active_count())
        print("handler_restored:", signal.getsignal(signal.SIGALRM) is signal.SIG_DFL)
        print("timer_off:", signal.getitimer(signal.ITIMER_REAL)[0] == 0)
        time.sleep(1.6)
        print("marker:", Path("marker").exists(), Path("swallowed").exists())
        """,
    )

    # Then the function was interrupted for real (no marker, no thread left behind), the error
    # is clear, and SIGALRM is restored
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "error: flow 'sleepy' timed out after 0.3s",
        "elapsed_ok: True",
        "threads: 1",
        "handler_restored: True",
        "timer_off: True",
        "marker: False False",
    ]


def test_nested_deadlines_belong_to_their_owner(tmp_path: Path) -> None:
    # Given a task with a short timeout inside a flow with a longer one, and a task with a long
    # timeout inside a flow with a short one
    result = run_script(
        tmp_path,
        """
        import time
        from conveyor import flow, task
        from conveyor.errors import FlowTimeout

        @task(timeout_seconds=0.2)
        def short_task():
            time.sleep(2)

        @flow(timeout_seconds=5)
        def long_flow():
            try:
                short_task()
            except FlowTimeout as exc:
                return f"caught: {exc}"

        @task(timeout_seconds=5)
        def long_task():
            time.sleep(2)

        @flow(timeout_seconds=0.2)
        def short_flow():
            long_task()

        print(long_flow())
        try:
            short_flow()
        except FlowTimeout as exc:
            print("outer:", exc)
        """,
    )

    # Then each timeout is reported by the flow or task whose deadline passed
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "caught: task 'short_task' timed out after 0.2s",
        "outer: flow 'short-flow' timed out after 0.2s",
    ]


def test_log_prints_without_logging_configured_still_reaches_stdout(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        from conveyor import flow

        @flow(log_prints=True)
        def chatty():
            print("hello from the flow")
            return 1

        print("result:", chatty())
        """,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello from the flow", "result: 1"]
