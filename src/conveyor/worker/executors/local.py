"""Executors that run flows on this machine: `ProcessExecutor` (the default, for ``process``
pools) and `InProcessExecutor` (debugging).

Both make the run's code ready the same way (`LocalExecutor`): a per-run `Workspace`, the run's
pull steps run in order by `conveyor.steps.run_steps` — the step that names the code (or, when
none does, an implicit fetch) puts the pinned version, checked against it first, into the
workspace the cheapest way this worker can (an overlay mount of the cached checkout, hard links
to its sealed files, or a copy: see `workspace`) — then ``started`` is called and the child is
supervised (`Supervisor`). The child
and the steps' commands get the worker's environment without its ``CONVEYOR_*`` settings, and
run as the ``--run-as`` user when there is one (`isolation`). They differ only in `launch`:

- `ProcessExecutor` starts ``python -m conveyor.worker.child`` in its own session, with the
  working directory set by the steps, and streams its stdout, stderr and logging records
  (`processes`). A run with no pull steps, run environment or ``command`` of its own gets its
  child before its code: started at once, it waits at its gate while the code is checked and
  the workspace made (`processes.GatedChild`);
- `InProcessExecutor` calls the same child code on a thread of the worker: no isolation, no
  way to stop it, one run at a time — for debugging, like rq's ``SimpleWorker``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.secrets import reveal
from conveyor.worker import child as child_protocol
from conveyor.worker.executors.base import (
    Child,
    ChildJob,
    Executor,
    Interrupt,
    Outcome,
    RunSpec,
    Started,
    StopReason,
    Supervisor,
)
from conveyor.worker.executors.isolation import RunAs
from conveyor.worker.executors.processes import GatedChild, Spawned, child_env, spawn
from conveyor.worker.executors.spares import SparePool
from conveyor.worker.executors.workspace import Workspace, WorkspaceMode, choose_mode
from conveyor.worker.logs import RunLogs

if TYPE_CHECKING:
    from conveyor._jobvars import ProcessOptions
    from conveyor.cache import CodeCache
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings

__all__ = ["InProcessExecutor", "LocalExecutor", "ProcessExecutor"]

logger = logging.getLogger(__name__)


class LocalExecutor(Executor, Supervisor):
    """Runs flows on this machine from per-run workspaces under ``work_dir``."""

    def __init__(
        self,
        *,
        cache: CodeCache,
        work_dir: Path,
        secrets: SecretStore | None = None,
        spares: bool = True,
        grace_seconds: float = 5.0,
        run_as: RunAs | None = None,
        workspace: str = "auto",
    ) -> None:
        Supervisor.__init__(self, grace_seconds=grace_seconds)
        self.cache = cache
        self.work_dir = work_dir
        self.secrets = secrets
        self.spares = SparePool(work_dir / "spares", cache=cache) if spares else None
        """Ready copies of recent versions, used only by the ``copy`` workspace mode."""
        self.run_as = run_as
        """The user runs execute as (`isolation.RunAs`), or None: the worker's own."""
        self.workspace = workspace
        """The requested `WorkspaceMode` (``auto``: the cheapest this worker can use)."""
        self._mode: WorkspaceMode | None = None
        self._mode_lock = threading.Lock()

    @classmethod
    def for_worker(
        cls,
        *,
        cache: CodeCache,
        work_dir: Path,
        secrets: SecretStore | None,
        settings: Settings,
        run_as: RunAs | None = None,
    ) -> LocalExecutor:
        return cls(cache=cache, work_dir=work_dir, secrets=secrets, run_as=run_as)

    def close(self) -> None:
        if self.spares is not None:
            self.spares.close()

    def workspace_mode(self) -> WorkspaceMode:
        """How workspaces are made, decided on first use (`workspace.choose_mode`: mounting
        is tried once); `ConfigError` when the requested mode is impossible here."""
        with self._mode_lock:
            if self._mode is None:
                self._mode = choose_mode(
                    self.workspace,
                    work_dir=self.work_dir,
                    cache_root=self.cache.root,
                    run_as=self.run_as,
                )
                logger.info("workspaces mode=%s work_dir=%s", self._mode, self.work_dir)
            return self._mode

    own_interpreter: bool = False
    """Whether the flow can run with another interpreter (a run environment)."""

    def prestart(
        self,
        spec: RunSpec,
        workspace: Workspace,
        *,
        env: Mapping[str, str],
        logs: RunLogs,
        options: ProcessOptions,
    ) -> GatedChild | None:
        """A child started now, to wait at its gate while the code is made ready (see
        `conveyor.worker.executors.processes`), or None: it is started when the code is."""
        return None

    @contextlib.contextmanager
    def run(
        self, spec: RunSpec, *, logs: RunLogs, interrupt: Interrupt, started: Started
    ) -> Iterator[Outcome]:
        workspace = Workspace.create(
            self.work_dir / "runs", spec.run_id, attempt=spec.attempt, shared=bool(self.run_as)
        )
        try:
            if self.run_as is not None:
                self.run_as.give(workspace.control)
            with ExitStack() as leases:  # the run's environment, kept until it has ended
                yield self._run(
                    spec, workspace, logs=logs, interrupt=interrupt, started=started, leases=leases
                )
        finally:
            workspace.remove()

    def _run(
        self,
        spec: RunSpec,
        workspace: Workspace,
        *,
        logs: RunLogs,
        interrupt: Interrupt,
        started: Started,
        leases: ExitStack,
    ) -> Outcome:
        from conveyor._jobvars import process_options, resolve_working_dir, run_environ
        from conveyor.envs import EnvCache
        from conveyor.steps import StepContext, run_steps
        from conveyor.worker.executors.runenv import RunEnvironment

        timings: dict[str, float] = {}
        env = run_environ(os.environ, {k: reveal(v) for k, v in spec.env.items()})
        if self.run_as is not None:
            env = self.run_as.environ(env, workspace=workspace.code)
        options = process_options(spec.job_variables)
        environment = RunEnvironment(
            EnvCache(self.cache.root, max_bytes=self.cache.max_bytes, environ=env),
            leases,
            env=env,
            extra_packages=options.extra_pip_packages,
            log=lambda line: logs.emit(line, stream="worker"),
        )

        def materialise(dest: Path) -> Mapping[str, Any]:
            return self._materialise(spec, workspace, dest, timings, leases)

        gated = self.prestart(spec, workspace, env=env, logs=logs, options=options)
        if gated is not None:
            leases.callback(gated.discard)  # unless the flow ran in it

        context = StepContext(
            code_dir=workspace.code,
            materialise=materialise,
            env=env,
            secrets=self.secrets,
            log=lambda line, stream: logs.emit(line, stream=stream),
            mask=logs.hide,
            popen=self.run_as.popen() if self.run_as is not None else {},
            timeout_seconds=spec.timeout_seconds,
            install=environment.install if self.own_interpreter else None,
        )
        steps_started = time.monotonic()
        run_steps(spec.pull_steps, context)
        chosen = environment.finish() if self.own_interpreter else None
        if environment.packages and not self.own_interpreter:
            raise ConfigError(
                "EXTRA_PIP_PACKAGES needs a flow in its own process; this executor runs flows "
                "in the worker's interpreter",
                hint="run the pool with the process executor (not --in-process)",
            )
        flow_cwd = resolve_working_dir(
            options.working_dir, cwd=context.cwd, code_dir=context.code_dir
        )
        if gated is not None and (chosen is not None or context.cwd != gated.code):
            gated.discard()  # it needs another interpreter, or its steps moved the code
            gated = None
        if environment.seconds > 0.0005:
            timings["env"] = environment.seconds
        spent = time.monotonic() - steps_started - environment.seconds
        steps = spent - timings.get("fetch", 0.0) - timings.get("workspace", 0.0)
        if spec.pull_steps and steps > 0.0005:
            timings["steps"] = steps
        if interrupt.reason is not None:  # cancelled or lost while fetching
            return _interrupted(interrupt.reason, timings)
        if not started(dict(timings)):
            return Outcome(state=None, spawned=time.time(), error="lease lost", timings=timings)
        job = ChildJob(
            run_id=spec.run_id,
            entrypoint=spec.entrypoint,
            parameters=dict(spec.parameters),
            workspace=context.cwd,
            control=workspace.control,
            env={k: reveal(v) for k, v in spec.env.items()},
            timeout_seconds=spec.timeout_seconds,
            kill_margin_seconds=spec.kill_margin_seconds,
            python=str(chosen.python) if chosen is not None else None,
            command=options.command,
            cwd=flow_cwd,
            stream_output=options.stream_output,
            ready=gated,
        )
        outcome = self.execute(job, logs=logs, interrupt=interrupt)
        if self.spares is not None and self._mode is WorkspaceMode.COPY:
            self.spares.refill(spec.source, spec.version)  # in the background, for the next run
        return _with_timings(outcome, timings)

    def _materialise(
        self,
        spec: RunSpec,
        workspace: Workspace,
        dest: Path,
        timings: dict[str, float],
        leases: ExitStack,
    ) -> Mapping[str, Any]:
        """Put the pinned version at ``dest`` (the workspace's code directory) the way of the
        worker's `WorkspaceMode`; a mount or links the kernel refuses fall back to a copy."""
        mode = self.workspace_mode()
        if mode is not WorkspaceMode.COPY and dest == workspace.code:
            started = time.monotonic()
            checkout = leases.enter_context(self.cache.checkout(spec.source, spec.version))
            checked = time.monotonic()
            try:
                self._share(mode, checkout, workspace, leases)
            except OSError as exc:
                logger.warning(
                    "workspace not shared, copying it instead mode=%s run=%s error=%s",
                    mode,
                    spec.run_id,
                    exc,
                )
                workspace.remove_code()
            else:
                timings["fetch"] = checked - started
                timings["workspace"] = time.monotonic() - checked
                return {"version": spec.version}
        self._copy(spec, dest, timings)
        return {"version": spec.version}

    def _share(
        self, mode: WorkspaceMode, checkout: Path, workspace: Workspace, leases: ExitStack
    ) -> None:
        """The workspace's code as an overlay of the (leased) checkout, or as hard links to
        its files; undone before the lease ends."""
        if mode is WorkspaceMode.OVERLAY:
            leases.callback(workspace.unmount)
            workspace.overlay(checkout, run_as=self.run_as)
            return
        owner = None if self.run_as is None else (self.run_as.uid, self.run_as.gid)
        leases.callback(self.cache.unlink_out, checkout, workspace.code)
        self.cache.link_out(checkout, workspace.code, owner=owner)

    def _copy(self, spec: RunSpec, dest: Path, timings: dict[str, float]) -> None:
        """Copy the pinned version into ``dest`` (a spare if one is ready, else a checked copy
        of the checkout); hand it to the ``--run-as`` user."""
        started = time.monotonic()
        if self.spares is not None and self.spares.take(spec.source, spec.version, dest):
            timings["fetch"] = 0.0
            timings["workspace"] = time.monotonic() - started
        else:
            copied = self.cache.copy_out(spec.source, spec.version, dest)
            timings["fetch"] = copied.fetch_seconds
            timings["workspace"] = copied.copy_seconds
        if self.run_as is not None:
            self.run_as.give(dest)


def _interrupted(reason: StopReason, timings: dict[str, float]) -> Outcome:
    from conveyor.schemas import RunState

    spawned = time.time()
    if reason is StopReason.LOST:
        return Outcome(state=None, spawned=spawned, error="lease lost", timings=timings)
    if reason is StopReason.CANCELLED:
        return Outcome(
            state=RunState.CANCELLED, spawned=spawned, error="cancelled", timings=timings
        )
    return Outcome(
        state=RunState.CRASHED,
        spawned=spawned,
        error="worker stopped before the run started",
        timings=timings,
    )


def _with_timings(outcome: Outcome, timings: dict[str, float]) -> Outcome:
    from dataclasses import replace

    return replace(outcome, timings={**timings, **outcome.timings})


class _ProcessChild:
    def __init__(self, spawned: Spawned) -> None:
        self.spawned = spawned
        self.proc = spawned.proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def finish(self) -> None:
        self.proc.wait()
        # Whatever the flow started and left behind dies with it: its session is ours.
        self.spawned.kill()


class ProcessExecutor(LocalExecutor):
    """Each run in a fresh ``python -m conveyor.worker.child`` process (the default)."""

    python: str = sys.executable
    own_interpreter = True

    def prestart(
        self,
        spec: RunSpec,
        workspace: Workspace,
        *,
        env: Mapping[str, str],
        logs: RunLogs,
        options: ProcessOptions,
    ) -> GatedChild | None:
        """Start the child before the code when nothing but the code is still to come: no pull
        steps (the implicit fetch only), no run environment, no ``command`` of its own."""
        if spec.pull_steps or options.command or options.extra_pip_packages:
            return None
        if os.environ.get("EXTRA_PIP_PACKAGES") or spec.env.get("EXTRA_PIP_PACKAGES"):
            return None
        return GatedChild.start(
            python=self.python,
            control=workspace.control,
            code=workspace.code,
            env=env,  # the run's, with the --run-as user's home and name already
            logs=logs,
            stream_output=options.stream_output,
            popen=self.run_as.popen() if self.run_as is not None else {},
        )

    def _environ(self, env: Mapping[str, str], *, workspace: Path) -> dict[str, str]:
        """The run's environment for its child (the ``--run-as`` user's home and name)."""
        if self.run_as is not None:
            return self.run_as.environ(env, workspace=workspace)
        return dict(env)

    def launch(self, job: ChildJob, *, logs: RunLogs, wake: threading.Event) -> Child:
        from conveyor._jobvars import child_command, run_environ

        spawned = None
        if job.ready is not None and job.python is None and not job.command:
            spawned = job.ready.open(cwd=job.cwd or job.workspace)
        if spawned is None:
            env = run_environ(os.environ, job.env)
            spawned = spawn(
                child_command(job.command, python=job.python or self.python, control=job.control),
                env=child_env(
                    self._environ(env, workspace=job.workspace),
                    workspace=job.workspace,
                    cwd=job.cwd,
                ),
                cwd=job.cwd or job.workspace,
                logs=logs,
                stream_output=job.stream_output,
                popen=self.run_as.popen() if self.run_as is not None else {},
            )
        proc = spawned.proc

        def wait_for_exit() -> None:
            proc.wait()
            wake.set()

        waiter = threading.Thread(target=wait_for_exit, daemon=True)
        waiter.start()
        logger.debug("child started run=%s pid=%d", job.run_id, proc.pid)
        return _ProcessChild(spawned)


class _ThreadChild:
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def send(self, sig: signal.Signals) -> None:
        logger.warning("in-process runs cannot be stopped; signal=%s ignored", sig.name)

    def finish(self) -> None:
        self.thread.join()


class InProcessExecutor(LocalExecutor):
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
