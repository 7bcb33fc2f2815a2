"""Executors: take a `RunSpec` (what to run, which code version, environment, limits), make the
code available where the run executes, run it, and say how it ended.

The worker hands every run of a pool to the executor registered for the pool's type
(`conveyor.worker.executors.EXECUTORS`); the spec carries the source spec and pinned version,
not local paths, so an executor that runs elsewhere (a Dask cluster, a container) materialises
the code where it runs. `Executor.run` is a context manager: the outcome's files (a pickled
result) live until the block exits.

`Supervisor` holds what every locally supervised child shares: write the run's input, start it,
wait for it to end, for its deadline, or for an interrupt (cancel, lost lease, shutdown) —
stopping it with SIGTERM and then SIGKILL after a grace period — and read what it wrote (rq's
``Worker`` vs ``SimpleWorker``: only `Supervisor.launch` differs).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.schemas import RunState
from conveyor.secrets import Secret
from conveyor.worker import child as child_protocol
from conveyor.worker.logs import RunLogs

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.schemas import Pool
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings
    from conveyor.worker.executors.isolation import RunAs
    from conveyor.worker.executors.processes import GatedChild

__all__ = [
    "Child",
    "ChildJob",
    "Executor",
    "Interrupt",
    "Outcome",
    "RunSpec",
    "Started",
    "StopReason",
    "Supervisor",
]

logger = logging.getLogger(__name__)


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
class RunSpec:
    """What to run, with which code, in which environment, within which limits."""

    run_id: str
    entrypoint: str
    source: Mapping[str, Any]
    """The deployment's secret-free source spec."""
    version: str
    """The pinned version (resolved before the spec is made when the run follows its ref)."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    pull_steps: tuple[Mapping[str, Any], ...] = ()
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    """Variables added to the run's environment (templates already resolved)."""
    job_variables: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None
    kill_margin_seconds: float = 0.0
    """Killed ``timeout_seconds + kill_margin_seconds`` after the start (the flow's own timeout
    fires first, with a clean error; the kill is the backstop for code that ignores it)."""


Started = Callable[[Mapping[str, float]], bool]
"""Called once the code is ready, just before the flow starts, with the timings so far (the
handler reports ``running``); False means the run was taken away and must not start."""


@dataclass(frozen=True)
class ChildJob:
    """Everything a local child needs: what to call, where, with which environment."""

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
    python: str | None = None
    """The interpreter of the run's environment (None: the worker's own)."""
    command: tuple[str, ...] = ()
    """The ``command`` job variable (empty: ``python -m conveyor.worker.child``)."""
    cwd: Path | None = None
    """The flow's working directory when it is not ``workspace`` (``working_dir``)."""
    stream_output: bool = True
    """False: the flow's stdout and stderr are not sent to the run's logs."""
    ready: GatedChild | None = None
    """A child started early for this run, waiting at its gate (the process executor's)."""


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
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent making the code ready (``fetch``, ``workspace``, ``steps``)."""
    result_storage: Any = None
    """The flow's own ``result_storage`` (a URL or a block spec), when it has one."""


class Child(Protocol):
    """A started run, as the supervisor sees it."""

    def poll(self) -> int | None: ...
    def send(self, sig: signal.Signals) -> None: ...
    def finish(self) -> None: ...


class Executor(ABC):
    """Runs one `RunSpec` to its end (the unit the worker's pool type selects)."""

    @abstractmethod
    def run(
        self, spec: RunSpec, *, logs: RunLogs, interrupt: Interrupt, started: Started
    ) -> AbstractContextManager[Outcome]:
        """Make the code ready, call ``started``, run the flow; the outcome (its files live
        until the block exits). Never raises for a failure of user code."""

    def close(self) -> None:  # noqa: B027 - optional: most executors keep nothing
        """Release what the executor keeps between runs."""

    def configure_pool(self, pool: Pool) -> None:  # noqa: B027 - optional
        """Take the pool's settings (its base job template) before the first run."""

    def check(self) -> None:  # noqa: B027 - optional: a local executor needs nothing more
        """What every run will need from this machine is there (a container engine, a
        cluster): `ConfigError` naming what is missing and how to configure it. The worker
        asks before it claims anything, so a worker that could only fail runs never starts."""

    @classmethod
    def for_worker(
        cls,
        *,
        cache: CodeCache,
        work_dir: Path,
        secrets: SecretStore | None,
        settings: Settings,
        run_as: RunAs | None = None,
    ) -> Executor:
        """The executor a worker uses (its code cache, its own directory, its secret store, and
        the user it runs flows as; an executor that cannot switch users refuses ``run_as``)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built by a worker")


class Supervisor(ABC):
    """Runs a `ChildJob` on this machine and supervises it; subclasses implement `launch`."""

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
            result_file = _result_file(job.control, output.get("result_file"))
            return Outcome(
                state=RunState.COMPLETED if completed else RunState.FAILED,
                spawned=spawned,
                entered=_float(output.get("entered")),
                finished=_float(output.get("finished")),
                error=None if completed else str(output.get("error") or "flow failed"),
                result=output.get("result"),
                result_file=result_file,
                returncode=returncode,
                result_storage=output.get("result_storage"),
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


_MAX_OUTPUT_BYTES = 64 << 20


def _regular(path: Path) -> int | None:
    """An fd on ``path`` if it is a regular file with one link, not a symlink (the child wrote
    it: it may have planted a link to a worker file, or a fifo); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def _read_output(control: Path) -> dict[str, Any] | None:
    fd = _regular(control / child_protocol.OUTPUT_FILE)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(_MAX_OUTPUT_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _result_file(control: Path, name: Any) -> Path | None:
    """The child's pickled result: only the one file name it may use, only a regular file."""
    from conveyor.results import RESULT_FILE

    if name != RESULT_FILE:
        return None
    fd = _regular(control / RESULT_FILE)
    if fd is None:
        return None
    os.close(fd)
    return control / RESULT_FILE


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
