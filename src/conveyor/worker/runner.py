"""One claimed run, from claim to final state: keep the lease, prepare, execute, report.

`RunHandler.handle` is what a worker thread does with a run it claimed:

1. start a `LeaseKeeper` (extends the lease every ``lease / 3``; notices ``cancel_requested``
   and a lost lease) and a `RunLogs` shipper;
2. resolve the ref when the run follows one, resolve templates in the job variables (the
   environment first, then the server's secrets), and build the `RunSpec`;
3. hand it to the pool's executor, which makes the code ready (the pull steps, the pinned
   version from the code cache), calls back to report ``running`` with the queue and fetch
   timings, and runs the flow;
4. report the final state with every timing, the result (or a ``result_ref`` with the SHA-256
   and size of the bytes stored there) and a one-line error.

Any failure here — of the flow, of the source, of the worker itself — becomes the run's state,
never an exception out of `handle`.

**When the server is away** (unreachable, or answering 502/503/504 while its database is down)
nothing is dropped: the ``running`` report, the log batches and the final state are kept and sent
again until the server answers. Every report carries the run's attempt and every log batch its
number, so sending one again after a lost reply changes nothing on the server. The server is
what bounds the waiting (its lease policy): it keeps an attempt for its holder for a lease after
it comes back, and takes the holder's final report even after the lease expired as long as no
other attempt has started; an answer of 409 (another attempt has started) ends it. A server that
never answers is given up on after `REPORT_PATIENCE_SECONDS`, with an error in the worker's log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor._fs import out_of_space
from conveyor.errors import (
    ApiError,
    ConveyorError,
    InvalidRequest,
    ObjectNotFound,
    ServerUnavailable,
    VersionNotFound,
)
from conveyor.schemas import DEFAULT_LEASE_SECONDS, Run, RunState, StateUpdate
from conveyor.secrets import Secret, resolve_templates
from conveyor.worker.executors import Executor, Interrupt, Outcome, RunSpec, StopReason
from conveyor.worker.logs import RunLogs

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.client import ConveyorClient
    from conveyor.results.local import ResultStore

__all__ = ["LeaseKeeper", "RunHandler"]

logger = logging.getLogger(__name__)

REPORT_PATIENCE_SECONDS = 600.0
TIMEOUT_MARGIN_SECONDS = 1.0
"""The flow's own timeout fires first (a clean `FlowTimeout`); the kill is the backstop."""


class LeaseKeeper:
    """Extends one run's lease every ``lease / 3`` seconds until stopped (an unreachable server
    is tried again at the next beat; a 409 — the attempt is no longer ours — interrupts the
    run as lost)."""

    def __init__(
        self,
        client: ConveyorClient,
        run_id: str,
        *,
        worker: str,
        lease_seconds: float,
        interrupt: Interrupt,
        attempt: int | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.interrupt = interrupt
        self.attempt = attempt
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{run_id[:8]}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        unreachable = False
        while not self._done.wait(self.lease_seconds / 3):
            try:
                reply = self.client.heartbeat_run(
                    self.run_id,
                    worker=self.worker,
                    lease_seconds=self.lease_seconds,
                    attempt=self.attempt,
                )
            except ApiError as exc:
                if not _retryable(exc):
                    if not self._done.is_set():
                        logger.warning("lease lost run=%s error=%s", self.run_id, exc)
                        self.interrupt.set(StopReason.LOST)
                    return
                if not unreachable:
                    logger.warning("lease extension failed: server unavailable run=%s", self.run_id)
                unreachable = True
                continue
            except Exception:
                logger.exception("lease extension failed run=%s", self.run_id)
                continue
            unreachable = False
            if reply.cancel_requested:
                self.interrupt.set(StopReason.CANCELLED)


class RunHandler:
    """Executes claimed runs for one worker (thread-safe: one `handle` call per run)."""

    def __init__(
        self,
        client: ConveyorClient,
        *,
        cache: CodeCache,
        executor: Executor,
        results: ResultStore,
        worker: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        environ: Mapping[str, str] | None = None,
        report_patience: float = REPORT_PATIENCE_SECONDS,
    ) -> None:
        self.client = client
        self.cache = cache
        self.executor = executor
        self.results = results
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.environ = environ
        self.report_patience = report_patience

    def close(self) -> None:
        """Release what the executor keeps between runs (its spare workspaces)."""
        self.executor.close()

    def handle(self, run: Run, *, interrupt: Interrupt | None = None) -> RunState | None:
        """Run ``run`` to a final state and report it; returns that state (None: lease lost)."""
        interrupt = interrupt or Interrupt()
        timings = {"queue": run.timings.get("queue", _queue_seconds(run))}
        logs = RunLogs(self.client, run.id, attempt=run.attempt).start()
        keeper = LeaseKeeper(
            self.client,
            run.id,
            worker=self.worker,
            lease_seconds=self.lease_seconds,
            interrupt=interrupt,
            attempt=run.attempt,
        ).start()
        update: StateUpdate | None
        try:
            update = self._run(run, logs=logs, interrupt=interrupt, timings=timings)
        except ConveyorError as exc:  # the source, the cache, a step, a template, a lost lease
            logs.emit(f"run failed before the flow started: {exc}", level="ERROR", stream="worker")
            if exc.hint:
                logs.emit(f"hint: {exc.hint}", level="ERROR", stream="worker")
            update = self._update(
                RunState.FAILED, version=run.version, error=str(exc), attempt=run.attempt
            )
        except Exception as exc:  # a bug in the worker, a full disk: still data on the run
            full = out_of_space(exc)
            if full is not None:  # the worker's disk, not a bug: one line, where, what to do
                where = getattr(self.executor, "work_dir", None)
                error = (
                    f"worker error: the worker's disk is full"
                    f"{f' (work directory {where})' if where else ''}: {full}"
                )
                logger.error("run=%s %s", run.id, error)
                logs.emit(error, level="ERROR", stream="worker")
                logs.emit(
                    "hint: free space on the worker's disk; a run with retries left is retried",
                    level="ERROR",
                    stream="worker",
                )
            else:
                logger.exception("worker error run=%s", run.id)
                logs.emit(traceback.format_exc().rstrip(), level="ERROR", stream="worker")
                error = f"worker error: {type(exc).__name__}: {exc}"
            update = self._update(
                RunState.CRASHED, version=run.version, error=error, attempt=run.attempt
            )
        if update is not None and update.error:
            update = update.model_copy(update={"error": logs.redact(update.error)})
        # The flow has ended: its outcome is reported whatever the lease keeper hears from now
        # on (the server decides whether the attempt is still ours). Every line goes first.
        deadline = time.monotonic() + self.report_patience
        try:
            logs.close(timeout=self.report_patience)
            if update is not None and not self._report(run.id, update, deadline=deadline):
                update = None
        finally:
            keeper.stop()
        state = None if update is None else update.state
        logger.info(
            "run finished run=%s state=%s%s",
            run.id,
            state.value if state else "lost",
            f" error={update.error}" if update and update.error else "",
        )
        return state

    # --- the steps ------------------------------------------------------------------------------

    def _run(
        self,
        run: Run,
        *,
        logs: RunLogs,
        interrupt: Interrupt,
        timings: dict[str, float],
    ) -> StateUpdate | None:
        for name in run.secret_parameters:  # a flow printing its SecretStr's value ships ****
            value = run.parameters.get(name)
            if isinstance(value, str):
                logs.hide(value)
        version = run.version
        if run.follow_ref:
            from conveyor.sources import source_from_spec

            source = source_from_spec(run.source)
            try:
                version = source.resolve(self.cache.context)
            except VersionNotFound as exc:  # deleted or renamed: the pinned version is no stand-in
                raise VersionNotFound(
                    f"{exc.message} (the deployment follows it)",
                    source=exc.source,
                    hint="restore the branch or tag, or redeploy with the one to follow now; "
                    "the deployed version is not run in its place",
                ) from None
            logs.emit(f"following the ref: {source.describe()} is at {version}", stream="worker")
        spec = RunSpec(
            run_id=run.id,
            attempt=run.attempt,
            entrypoint=run.entrypoint,
            parameters=dict(run.parameters),
            source=dict(run.source),
            version=version,
            pull_steps=tuple(dict(step) for step in run.pull_steps),
            env=self._environment(run, version, logs),
            job_variables=dict(run.job_variables),
            timeout_seconds=run.timeout_seconds,
            kill_margin_seconds=TIMEOUT_MARGIN_SECONDS,
        )

        def started(ready: Mapping[str, float]) -> bool:
            timings.update(ready)
            return self._started(run, version, timings, interrupt)

        with self.executor.run(spec, logs=logs, interrupt=interrupt, started=started) as outcome:
            return self._final(run, outcome, logs=logs, version=version, timings=timings)

    def _started(
        self, run: Run, version: str, timings: dict[str, float], interrupt: Interrupt
    ) -> bool:
        """Report ``running`` (again while the server is away); False when the run was taken
        away (cancelled, lease lost) or the server did not answer in time: the flow never
        starts unless the server knows it does."""
        update = self._update(
            RunState.RUNNING, version=version, timings=dict(timings), attempt=run.attempt
        )
        deadline = time.monotonic() + self.report_patience
        delay = 0.2
        while True:
            try:
                self.client.set_run_state(run.id, update)
                return True
            except (InvalidRequest, ObjectNotFound) as exc:
                if interrupt.reason is StopReason.CANCELLED:
                    logger.info("run cancelled before it started run=%s", run.id)
                else:
                    logger.warning("run taken away before it started run=%s error=%s", run.id, exc)
                interrupt.set(StopReason.LOST)
                return False
            except ApiError as exc:
                if not _retryable(exc) or time.monotonic() > deadline:
                    logger.error("run not started: %s run=%s", exc, run.id)
                    interrupt.set(StopReason.LOST)
                    return False
                logger.info("server unavailable, retrying the running report run=%s", run.id)
            if interrupt.wake.wait(delay) and interrupt.reason is not None:
                logger.info("run stopped before it started run=%s", run.id)
                return False
            delay = self._next_delay(delay)

    def _environment(self, run: Run, version: str, logs: RunLogs) -> dict[str, str | Secret]:
        """The run's variables: the job variables' ``env`` with templates resolved (against the
        environment without the worker's own ``CONVEYOR_*`` settings, then the secret store),
        every secret among them masked in the run's logs, and the run's own ``CONVEYOR_*``."""
        from conveyor._jobvars import child_environ, job_env

        variables = resolve_templates(
            dict(run.job_variables),
            store=self.client,
            environ=child_environ(os.environ if self.environ is None else self.environ),
            seen=logs.hide,
        )
        env: dict[str, str | Secret] = job_env(variables) if isinstance(variables, Mapping) else {}
        for value in env.values():
            if isinstance(value, Secret):
                logs.hide(value.reveal())
        env.update(
            {
                "CONVEYOR_RUN_ID": run.id,
                "CONVEYOR_FLOW_NAME": run.flow_name,
                "CONVEYOR_DEPLOYMENT_NAME": run.deployment_name,
                "CONVEYOR_RUN_VERSION": version,
                "CONVEYOR_RUN_ATTEMPT": str(run.attempt),
            }
        )
        return env

    def _final(
        self,
        run: Run,
        outcome: Outcome,
        *,
        logs: RunLogs,
        version: str,
        timings: dict[str, float],
    ) -> StateUpdate | None:
        timings.update(outcome.timings)
        if outcome.state is None:
            return None
        if outcome.error and outcome.entered is None:  # the child did not get to say why
            logs.emit(outcome.error, level="ERROR", stream="worker")
        if outcome.entered is not None:
            timings["start"] = max(outcome.entered - outcome.spawned, 0.0)
            if outcome.finished is not None:
                timings["run"] = max(outcome.finished - outcome.entered, 0.0)
        stored = None
        if outcome.result_file is not None:
            from conveyor.worker.results import put_result

            stored = put_result(
                run, outcome.result_file, outcome.result_storage, self.results, self.cache.context
            )
        return self._update(
            outcome.state,
            version=version,
            timings=timings,
            result=outcome.result,
            result_ref=None if stored is None else stored.ref,
            result_sha256=None if stored is None else stored.sha256,
            result_size=None if stored is None else stored.size,
            error=outcome.error,
            attempt=run.attempt,
        )

    def _update(self, state: RunState, **fields: Any) -> StateUpdate:
        return StateUpdate(worker=self.worker, state=state, **fields)

    def _next_delay(self, delay: float) -> float:
        """Back off, but never past a third of a lease (the server's grace after it comes back
        is one lease) nor 5 s."""
        return min(delay * 2, max(self.lease_seconds / 3, 0.2), 5.0)

    def _report(self, run_id: str, update: StateUpdate, *, deadline: float) -> bool:
        """Send the final state until the server answers; False if it was refused (the attempt
        is no longer ours) or the server did not answer before ``deadline``."""
        delay = 0.2
        while True:
            try:
                self.client.set_run_state(run_id, update)
                return True
            except ApiError as exc:
                if not _retryable(exc):
                    logger.warning("final state refused run=%s error=%s", run_id, exc)
                    return False
                if time.monotonic() > deadline:
                    logger.error(
                        "final state not reported run=%s state=%s error=%s",
                        run_id,
                        update.state,
                        exc,
                    )
                    return False
                logger.info("server unavailable, retrying final state run=%s", run_id)
            time.sleep(delay)
            delay = self._next_delay(delay)


def _retryable(exc: ApiError) -> bool:
    """Worth sending again: the server is unreachable or cannot serve for now (5xx)."""
    return isinstance(exc, ServerUnavailable) or (exc.status_code or 0) >= 500


def _queue_seconds(run: Run) -> float:
    claimed = run.pending_at or run.running_at
    if claimed is None:
        return 0.0
    return max((claimed - run.created).total_seconds(), 0.0)
