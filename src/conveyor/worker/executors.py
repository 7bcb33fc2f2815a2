"""Executors: run one prepared flow run and say how it ended.

`Executor.execute` is the same for every executor: write the run's input, start it, wait for it
to end, for its deadline, or for an interrupt (cancel, lost lease, shutdown) — stopping it with
SIGTERM and then SIGKILL after a grace period — and read what it wrote. Only `Executor.launch`
differs (rq's ``Worker`` vs ``SimpleWorker``):

- `ProcessExecutor` (the default) starts ``python -m conveyor.worker.child`` in its own session,
  with the workspace as working directory, and streams its stdout, stderr and logging records;
- `InProcessExecutor` calls the same child code on a thread of the worker: no isolation, no
  way to stop it, one run at a time — for debugging, like rq's ``SimpleWorker``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from conveyor.schemas import RunState
from conveyor.worker import child as child_protocol
from conveyor.worker.logs import RunLogs, pump_lines, pump_records

__all__ = [
    "ChildJob",
    "Executor",
    "InProcessExecutor",
    "Interrupt",
    "Outcome",
    "ProcessExecutor",
    "StopReason",
]

logger = logging.getLogger(__name__)

PUMP_JOIN_SECONDS = 5.0


class StopReason(StrEnum):
    """Why the worker stopped a run before it ended by itself."""

    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    LOST = "lost"
    SHUTDOWN = "shutdown"


class Interrupt:
    """A run's interrupt flag: set once, with a reason, from any thread; wakes the supervisor."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._reason: StopReason | None = None
        self._lock = threading.Lock()

    @property
    def reason(self) -> StopReason | None:
        return self._reason

    def set(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        self.wake.set()


@dataclass(frozen=True)
class ChildJob:
    """Everything a child needs: what to call, where, with which environment."""

    run_id: str
    entrypoint: str
    parameters: dict[str, Any]
    workspace: Path
    control: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None
    kill_margin_seconds: float = 0.0
    """Killed ``timeout_seconds + kill_margin_seconds`` after the start (the flow's own timeout
    fires first, with a clean error; the kill is the backstop for code that ignores it)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, with its timestamps (``time.time()``) for the phase timings."""

    state: RunState | None
    """The final state, or None when the lease was lost (someone else owns the run now)."""
    spawned: float
    entered: float | None = None
    finished: float | None = None
    error: str | None = None
    result: Any = None
    result_file: Path | None = None
    returncode: int | None = None


class Child(Protocol):
    """A started run, as the supervisor sees it."""

    def poll(self) -> int | None: ...
    def send(self, sig: signal.Signals) -> None: ...
    def finish(self) -> None: ...


class Executor(ABC):
    """Runs a `ChildJob`; subclasses only implement `launch`."""

    def __init__(self, *, grace_seconds: float = 5.0) -> None:
        self.grace_seconds = grace_seconds

    @abstractmethod
    def launch(self, job: ChildJob, *, logs: RunLogs, wake: threading.Event) -> Child:
        """Start the run; set ``wake`` when it ends."""

    def execute(self, job: ChildJob, *, logs: RunLogs, interrupt: Interrupt) -> Outcome:
        """Run ``job`` to its end, its deadline or an interrupt; never raises for user code."""
        job.control.mkdir(parents=True, exist_ok=True)
        payload = {"run_id": job.run_id, "entrypoint": job.entrypoint, "parameters": job.parameters}
        (job.control / child_protocol.INPUT_FILE).write_text(json.dumps(payload))
        spawned = time.time()
        child = self.launch(job, logs=logs, wake=interrupt.wake)
        deadline = (
            None
            if job.timeout_seconds is None
            else time.monotonic() + job.timeout_seconds + job.kill_margin_seconds
        )
        returncode = self._wait(child, interrupt, deadline)
        if returncode is None:
            reason = interrupt.reason or StopReason.TIMEOUT
            returncode = self._stop(child, interrupt.wake)
        else:
            reason = None
        child.finish()
        return self._outcome(job, reason=reason, returncode=returncode, spawned=spawned)

    def _wait(self, child: Child, interrupt: Interrupt, deadline: float | None) -> int | None:
        """The return code, or None when it must be stopped (interrupt or deadline)."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            interrupt.wake.wait(remaining if remaining is None else max(remaining, 0))
            interrupt.wake.clear()
            code = child.poll()
            if code is not None:
                return code
            if interrupt.reason is not None:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                interrupt.set(StopReason.TIMEOUT)
                return None

    def _stop(self, child: Child, wake: threading.Event) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; the return code."""
        child.send(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while (code := child.poll()) is None and time.monotonic() < deadline:
            wake.wait(min(0.05, max(deadline - time.monotonic(), 0)))
            wake.clear()
        if code is None:
            child.send(signal.SIGKILL)
            for _ in range(200):
                if (code := child.poll()) is not None:
                    break
                time.sleep(0.01)
        return code

    def _outcome(
        self, job: ChildJob, *, reason: StopReason | None, returncode: int | None, spawned: float
    ) -> Outcome:
        output = _read_output(job.control)
        if output and output.get("status") in ("completed", "failed"):
            completed = output["status"] == "completed"
            result_file = output.get("result_file")
            return Outcome(
                state=RunState.COMPLETED if completed else RunState.FAILED,
                spawned=spawned,
                entered=_float(output.get("entered")),
                finished=_float(output.get("finished")),
                error=None if completed else str(output.get("error") or "flow failed"),
                result=output.get("result"),
                result_file=job.control / result_file if result_file else None,
                returncode=returncode,
            )
        state: RunState | None
        if reason is StopReason.LOST:
            state, error = None, "lease lost"
        elif reason is StopReason.CANCELLED:
            state, error = RunState.CANCELLED, "cancelled"
        elif reason is StopReason.TIMEOUT:
            state, error = RunState.FAILED, f"flow timed out after {job.timeout_seconds:g}s"
        elif reason is StopReason.SHUTDOWN:
            state, error = RunState.CRASHED, "worker stopped before the run finished"
        else:
            state, error = RunState.CRASHED, _exit_text(returncode)
        return Outcome(state=state, spawned=spawned, error=error, returncode=returncode)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _read_output(control: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((control / child_protocol.OUTPUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "child process could not be stopped"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"child process was killed by {name}"
    if returncode == 0:
        return "child process exited without reporting a result"
    return f"child process exited with code {returncode} without reporting a result"


class _ProcessChild:
    def __init__(self, proc: subprocess.Popen[bytes], pumps: list[threading.Thread]) -> None:
        self.proc = proc
        self.pumps = pumps

    def poll(self) -> int | None:
        return self.proc.poll()

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def finish(self) -> None:
        self.proc.wait()
        # Whatever the flow started and left behind dies with it: its session is ours.
        self.send(signal.SIGKILL)
        for pump in self.pumps:
            pump.join(PUMP_JOIN_SECONDS)


class ProcessExecutor(Executor):
    """Each run in a fresh ``python -m conveyor.worker.child`` process (the default)."""

    def __init__(self, *, grace_seconds: float = 5.0, python: str | None = None) -> None:
        super().__init__(grace_seconds=grace_seconds)
        self.python = python or sys.executable

    def launch(self, job: ChildJob, *, logs: RunLogs, wake: threading.Event) -> Child:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **job.env}
        # The flow's own subprocesses import its modules too.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(job.workspace), env.get("PYTHONPATH", "")) if p
        )
        env = {
            **env,
            child_protocol.LOG_FD_ENV: str(write_fd),
            child_protocol.WORKER_PID_ENV: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "conveyor.worker.child", str(job.control)],
                cwd=job.workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        assert proc.stdout is not None
        assert proc.stderr is not None
        records = os.fdopen(read_fd, "rb")
        pumps = [
            threading.Thread(
                target=pump_lines,
                args=(proc.stdout, logs),
                kwargs={"stream": "stdout", "level": "INFO"},
            ),
            threading.Thread(
                target=pump_lines,
                args=(proc.stderr, logs),
                kwargs={"stream": "stderr", "level": "WARNING"},
            ),
            threading.Thread(target=pump_records, args=(records, logs)),
        ]

        def wait_for_exit() -> None:
            proc.wait()
            wake.set()

        waiter = threading.Thread(target=wait_for_exit)
        for thread in (*pumps, waiter):
            thread.daemon = True
            thread.start()
        logger.debug("child started run=%s pid=%d", job.run_id, proc.pid)
        return _ProcessChild(proc, pumps)


class _ThreadChild:
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def send(self, sig: signal.Signals) -> None:
        logger.warning("in-process runs cannot be stopped; signal=%s ignored", sig.name)

    def finish(self) -> None:
        self.thread.join()


class InProcessExecutor(Executor):
    """Each run on a thread of the worker itself: for debugging only (one run at a time).

    There is no isolation: the flow shares the worker's modules, working directory and
    environment, its ``print`` output is not captured, and it cannot be cancelled or timed out.
    """

    def launch(self, job: ChildJob, *, logs: RunLogs, wake: threading.Event) -> Child:
        def target() -> None:
            handler = _RecordForwarder(logs)
            root = logging.getLogger()
            root.addHandler(handler)
            level = root.level
            root.setLevel(min(level, logging.INFO) if level else logging.INFO)
            previous = Path.cwd()
            added = str(job.workspace) not in sys.path
            if added:
                sys.path.insert(0, str(job.workspace))
            try:
                os.chdir(job.workspace)
                output = child_protocol.run_flow(job.control, job.workspace)
                (job.control / child_protocol.OUTPUT_FILE).write_text(json.dumps(output))
            finally:
                os.chdir(previous)
                if added:
                    sys.path.remove(str(job.workspace))
                root.removeHandler(handler)
                root.setLevel(level)
                wake.set()

        thread = threading.Thread(target=target, name=f"run-{job.run_id[:8]}", daemon=True)
        thread.start()
        return _ThreadChild(thread)


class _RecordForwarder(logging.Handler):
    def __init__(self, logs: RunLogs) -> None:
        super().__init__(level=logging.INFO)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        self.logs.emit(message, level=record.levelname)
