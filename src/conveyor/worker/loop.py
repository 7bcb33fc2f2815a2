"""The worker: one readable loop that claims runs from a pool and hands them to threads.

```
check the executor once (a container engine, a cluster: refused before any claim)
while not stopping:
    heartbeat (every HEARTBEAT_SECONDS)
    if max_runs reached: stop
    if every slot is busy: wait for one to free up
    run = claim (long-poll: returns as soon as a run is queued, or after poll_seconds)
    if no run: in burst mode, stop once nothing is running
    else: execute it on a thread (`RunHandler.handle`: fetch, child process, report)
drain: let running runs finish (up to shutdown_timeout), then stop them
last heartbeat, saying the worker stops (`conveyor workers ls`: offline at once)
```

SIGTERM/SIGINT stop the claiming; a second signal stops the running runs too. A server that goes
away is waited for with a bounded backoff (logged once); a failure of user code is the run's
state and never reaches this loop.

Every claim carries a claim id, and the worker keeps presenting the same one until a claim gives
it a run: when the reply to a claim is lost (the server took a run for it, the answer never came),
the next claim gets that very run back instead of leaving it pending until its lease expires.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    ApiError,
    ConfigError,
    ConveyorError,
    ObjectNotFound,
    ServerUnavailable,
    Unauthorized,
)
from conveyor.schemas import DEFAULT_LEASE_SECONDS, Run
from conveyor.worker.executors import Executor, Interrupt, StopReason
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runner import RunHandler

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.client import ConveyorClient
    from conveyor.settings import Settings
    from conveyor.worker.executors.isolation import RunAs

__all__ = ["Worker", "default_worker_name"]

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
CHANGE_BEAT_SECONDS = 1.0
"""A change in the number of running runs is reported sooner, but not more often than this."""
MAX_BACKOFF_SECONDS = 5.0
MIN_EMPTY_CLAIM_SECONDS = 0.1
STILL_WAITING_SECONDS = 10.0
"""A stopping worker says why it has not exited once its runs' threads outlive this."""


def default_worker_name() -> str:
    """``<host>-<pid>``: unique on a machine, readable in `conveyor workers ls`."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Claims runs from ``pool`` and executes up to ``limit`` of them at a time."""

    def __init__(
        self,
        client: ConveyorClient,
        *,
        pool: str,
        handler: RunHandler,
        name: str,
        labels: Sequence[str] = (),
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = 2.0,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.pool = pool
        self.handler = handler
        self.name = name
        self.labels = list(labels)
        self.limit = max(1, limit)
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.shutdown_timeout = shutdown_timeout
        self.started = 0
        self._running: dict[str, tuple[threading.Thread, Interrupt]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._next_heartbeat = 0.0
        self._last_beat = -CHANGE_BEAT_SECONDS
        self._reported_running = 0
        self._unreachable = False
        self._backoff = 0.25
        self._claim_id: str | None = None
        self.own_dir: Path | None = None
        """This worker's directory (workspaces, spares), removed when `work` returns."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        client: ConveyorClient,
        options: WorkerOptions | None = None,
        *,
        executor: Executor | None = None,
    ) -> Worker:
        """A worker for ``options.pool`` with the code cache and result store of ``settings``
        and the executor registered for the pool's type (a pool of a type this worker cannot
        run is refused).

        Run workspaces go under ``options.work_dir`` (default ``$CONVEYOR_HOME/work``): a fast
        local disk or a tmpfs makes the per-run copy of the checkout cheaper. With
        ``options.run_as`` see `conveyor.worker.executors.isolation` (the home and cache become
        private, workspaces default to ``<tmp>/conveyor-work-<uid>``, one child is tried first).
        """
        from conveyor.cache import CodeCache
        from conveyor.connect import fetch_context
        from conveyor.results.local import ResultStore
        from conveyor.worker.executors.isolation import work_base
        from conveyor.worker.executors.workspace import worker_dir

        options = options or WorkerOptions()
        name = options.name or default_worker_name()
        context = fetch_context(settings, client)
        cache = CodeCache.from_settings(settings, context=context)
        if settings.cache_dir.exists() and not settings.cache_dir.is_dir():
            # else every run it claims would fail at its fetch, retries and all
            raise ConfigError(
                f"CONVEYOR_CACHE_DIR {settings.cache_dir} is not a folder",
                hint="point CONVEYOR_CACHE_DIR at a folder (it is made when missing)",
            )
        run_as = _run_as(options, settings)
        if run_as is None:
            own_dir = worker_dir(options.work_dir or settings.home / "work")
        else:
            own_dir = worker_dir(work_base(options.work_dir), shared=True)
            run_as.check(sys.executable, own_dir)
        if executor is None:
            executor = _executor_for(
                client, options, cache=cache, work_dir=own_dir, settings=settings, run_as=run_as
            )
            _choose_workspaces(executor, options)
        handler = RunHandler(
            client,
            cache=cache,
            executor=executor,
            results=ResultStore.from_settings(settings),
            worker=name,
            lease_seconds=options.lease_seconds,
            environ=context.environ,
        )
        worker = cls(
            client,
            pool=options.pool,
            handler=handler,
            name=name,
            labels=[*options.labels, socket.gethostname()],
            limit=options.limit,
            lease_seconds=options.lease_seconds,
            poll_seconds=options.poll_seconds,
            shutdown_timeout=options.shutdown_timeout,
        )
        worker.own_dir = own_dir
        return worker

    # --- the loop -------------------------------------------------------------------------------

    def work(self, *, burst: bool = False, max_runs: int | None = None) -> int:
        """Claim and execute runs until stopped; returns the exit code (0). An executor that
        lacks what its runs need (`Executor.check`) raises `ConfigError` before any claim."""
        previous = self._install_signal_handlers()
        try:
            self.handler.executor.check()
            return self._work(burst=burst, max_runs=max_runs)
        finally:
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)
            self.handler.close()
            if self.own_dir is not None:
                from conveyor.worker.executors.workspace import remove_worker_dir

                remove_worker_dir(self.own_dir)

    def _work(self, *, burst: bool, max_runs: int | None) -> int:
        logger.info(
            "worker started name=%s pool=%s limit=%d burst=%s",
            self.name,
            self.pool,
            self.limit,
            burst,
        )
        try:
            while not self._stopping.is_set():
                self._heartbeat_if_due()
                if max_runs is not None and self.started >= max_runs:
                    break
                if self.running >= self.limit:
                    self._wait_for_change(max(self._until_heartbeat(), 0.01))
                    continue
                asked = time.monotonic()
                run = self._claim(wait_seconds=0 if burst else self.poll_seconds)
                if run is not None:
                    self._start(run)
                elif burst and self.running == 0 and not self._unreachable:
                    break
                elif burst:
                    self._wait_for_change(self.poll_seconds)
                elif time.monotonic() - asked < MIN_EMPTY_CLAIM_SECONDS:
                    self._stopping.wait(MIN_EMPTY_CLAIM_SECONDS)  # a server that does not long-poll
        finally:  # also when a wrong key or an unknown pool ends the loop
            self._drain()
        self._heartbeat_if_due(force=True, stopping=True)  # `workers ls`: offline at once
        logger.info("worker stopped name=%s runs=%d", self.name, self.started)
        return 0

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; with ``force``, stop the running runs too (from any thread)."""
        self._stopping.set()
        self._changed.set()
        if force:
            self._force.set()
            self._interrupt_all(StopReason.SHUTDOWN)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # --- steps of the loop ----------------------------------------------------------------------

    def _claim(self, *, wait_seconds: float) -> Run | None:
        if self._claim_id is None:
            self._claim_id = uuid.uuid4().hex
        try:
            run = self.client.claim_run(
                self.pool,
                worker=self.name,
                labels=self.labels,
                lease_seconds=self.lease_seconds,
                wait_seconds=wait_seconds,
                claim_id=self._claim_id,
            )
        except ServerUnavailable as exc:
            self._back_off(exc)
            return None
        except (Unauthorized, ObjectNotFound):
            raise  # a wrong key or an unknown pool will not fix itself
        except ApiError as exc:
            logger.warning("claim failed error=%s", exc)
            self._back_off(exc)
            return None
        self._reachable()
        if run is not None:
            self._claim_id = None  # answered with a run: the next claim is a new one
        return run

    def _start(self, run: Run) -> None:
        interrupt = Interrupt()
        thread = threading.Thread(
            target=self._execute, args=(run, interrupt), name=f"run-{run.id[:8]}", daemon=True
        )
        with self._lock:
            self._running[run.id] = (thread, interrupt)
            self.started += 1
        logger.info(
            "run claimed run=%s deployment=%s/%s attempt=%d",
            run.id,
            run.flow_name,
            run.deployment_name,
            run.attempt,
        )
        if self._force.is_set():
            interrupt.set(StopReason.SHUTDOWN)
        thread.start()

    def _execute(self, run: Run, interrupt: Interrupt) -> None:
        try:
            self.handler.handle(run, interrupt=interrupt)
        except Exception:  # handle() turns failures into states; this is a last resort
            logger.exception("run handling failed run=%s", run.id)
        finally:
            with self._lock:
                self._running.pop(run.id, None)
            self._changed.set()

    def _wait_for_change(self, timeout: float) -> None:
        self._changed.wait(timeout)
        self._changed.clear()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        if self.running:
            logger.info("waiting for running runs count=%d", self.running)
        while self.running and time.monotonic() < deadline and not self._force.is_set():
            self._wait_for_change(min(1.0, max(deadline - time.monotonic(), 0.01)))
        if self.running:
            logger.warning("stopping runs that did not finish count=%d", self.running)
            self._interrupt_all(StopReason.SHUTDOWN)
        with self._lock:
            threads = [thread for thread, _ in self._running.values()]
        stopped = time.monotonic()
        told = False
        for thread in threads:
            while thread.is_alive():
                thread.join(1.0)
                waiting = sum(t.is_alive() for t in threads)
                if waiting and not told and time.monotonic() - stopped > STILL_WAITING_SECONDS:
                    told = True  # past the stop's grace: it is the server they wait for
                    logger.warning(
                        "waiting for %d run(s) to report their final state, up to %gs while the "
                        "server is unavailable; SIGKILL gives them up (each is crashed when its "
                        "lease expires, and retried if it has retries left)",
                        waiting,
                        self.handler.report_patience,
                    )

    def _interrupt_all(self, reason: StopReason) -> None:
        with self._lock:
            interrupts = [interrupt for _, interrupt in self._running.values()]
        for interrupt in interrupts:
            interrupt.set(reason)

    def _until_heartbeat(self) -> float:
        """Seconds until the next heartbeat is due (sooner when the running count changed)."""
        due = self._next_heartbeat
        if self.running != self._reported_running:
            due = min(due, self._last_beat + CHANGE_BEAT_SECONDS)
        return due - time.monotonic()

    def _heartbeat_if_due(self, *, force: bool = False, stopping: bool = False) -> None:
        now = time.monotonic()
        periodic = force or now >= self._next_heartbeat
        if not periodic and self._until_heartbeat() > 0:
            return
        if periodic:  # a beat for a changed count leaves the cache figures to these
            self._next_heartbeat = now + HEARTBEAT_SECONDS
        self._last_beat = now
        self._reported_running = running = self.running  # a failed beat is not sent sooner
        try:
            self.client.worker_heartbeat(
                self.name,
                pool=self.pool,
                labels=self.labels,
                limit=self.limit,
                running=running,
                cache=_cache_figures(self.handler.cache) if periodic else None,
                stopping=stopping,
            )
        except Unauthorized:
            raise
        except ApiError as exc:
            logger.debug("worker heartbeat failed error=%s", exc)

    def _back_off(self, exc: ApiError) -> None:
        if not self._unreachable:
            logger.warning("server unavailable, retrying: %s", exc)
        self._unreachable = True
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
        self._stopping.wait(self._backoff)

    def _reachable(self) -> None:
        if self._unreachable:
            logger.warning("server reachable again")
            self._next_heartbeat = 0.0
        self._unreachable = False
        self._backoff = 0.25

    # --- signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        """Handle SIGTERM/SIGINT (main thread only); the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            logger.warning("%s again: stopping running runs", name)
            self.stop(force=True)
        else:
            logger.warning("%s: no new runs; waiting for running runs (again to stop them)", name)
            self.stop()


def _run_as(options: WorkerOptions, settings: Settings) -> RunAs | None:
    """The ``--run-as`` user, with the worker's home and cache made private to the worker."""
    if options.run_as is None:
        return None
    from conveyor.worker.executors.isolation import RunAs, make_private

    if options.in_process:
        raise ConfigError("--run-as cannot be combined with --in-process (no child process)")
    run_as = RunAs.lookup(options.run_as)
    for private in (settings.home, settings.cache_dir):
        make_private(private)
    return run_as


def _executor_for(
    client: ConveyorClient,
    options: WorkerOptions,
    *,
    cache: Any,
    work_dir: Path,
    settings: Settings,
    run_as: RunAs | None = None,
) -> Executor:
    """The executor registered for the type of ``options.pool`` (refused when there is none)."""
    from conveyor.worker.executors import EXECUTORS

    pools = {pool.name: pool for pool in client.list_pools()}
    pool = pools.get(options.pool)
    if pool is None:
        raise ObjectNotFound(
            f"work pool {options.pool!r} does not exist",
            hint=f"create it with `conveyor pool create {options.pool}`",
        )
    if pool.type not in EXECUTORS:
        raise ConfigError(
            f"work pool {pool.name!r} is of type {pool.type!r}, which this worker cannot run",
            hint=f"this worker runs pools of type: {', '.join(EXECUTORS.names())}",
        )
    if options.in_process:
        if pool.type != "process":
            raise ConfigError("--in-process runs only process pools")
        from conveyor.worker.executors.local import InProcessExecutor

        return InProcessExecutor(cache=cache, work_dir=work_dir, secrets=client)
    chosen = EXECUTORS.get(pool.type)
    if run_as is None:
        executor = chosen.for_worker(
            cache=cache, work_dir=work_dir, secrets=client, settings=settings
        )
    else:
        executor = chosen.for_worker(
            cache=cache, work_dir=work_dir, secrets=client, settings=settings, run_as=run_as
        )
    executor.configure_pool(pool)
    return executor


def _choose_workspaces(executor: Executor, options: WorkerOptions) -> None:
    """Give a local executor the requested workspace mode, and decide it now (an impossible
    ``--workspace`` is an error at start, not a failed run later)."""
    from conveyor.worker.executors.local import LocalExecutor

    if isinstance(executor, LocalExecutor):
        executor.workspace = options.workspace
        executor.workspace_mode()


def _cache_figures(cache: CodeCache) -> dict[str, int] | None:
    """What the worker's heartbeat says about its code cache (None when it cannot be read)."""
    try:
        info = cache.info()
    except (OSError, ConveyorError):
        return None
    return {
        "cache_bytes": info.used_bytes,
        "cache_entries": info.entry_count,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
