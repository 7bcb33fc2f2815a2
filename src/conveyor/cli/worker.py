"""`conveyor worker start`: claim runs from a pool and execute them.

The command checks its options (`conveyor.worker.options.WorkerOptions` holds every default),
then replaces this process (``exec``: same PID, same signals) with ``python -m conveyor.worker``,
a lean entry point that does not keep the command line's libraries in memory.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from conveyor.worker.options import WorkerOptions

__all__ = ["register"]

worker_app = typer.Typer(help="Run a worker: claim runs from a pool and execute them.")
_D = WorkerOptions()


def _h(name: str) -> str:
    from dataclasses import fields

    return next(str(f.metadata["help"]) for f in fields(WorkerOptions) if f.name == name)


@worker_app.command("start")
def start(
    pool: str = typer.Option(_D.pool, "--pool", help=_h("pool")),
    limit: int = typer.Option(_D.limit, "--limit", min=1, help=_h("limit")),
    label: list[str] = typer.Option([], "--label", help=_h("labels")),
    burst: bool = typer.Option(_D.burst, "--burst", help=_h("burst")),
    name: str | None = typer.Option(_D.name, "--name", help=_h("name")),
    max_runs: int | None = typer.Option(_D.max_runs, "--max-runs", min=1, help=_h("max_runs")),
    lease_seconds: float = typer.Option(
        _D.lease_seconds, "--lease-seconds", min=0.5, help=_h("lease_seconds")
    ),
    poll_seconds: float = typer.Option(
        _D.poll_seconds, "--poll-seconds", min=0.0, help=_h("poll_seconds")
    ),
    shutdown_timeout: float = typer.Option(
        _D.shutdown_timeout, "--shutdown-timeout", min=0.0, help=_h("shutdown_timeout")
    ),
    work_dir: Path | None = typer.Option(_D.work_dir, "--work-dir", help=_h("work_dir")),
    run_as: str | None = typer.Option(_D.run_as, "--run-as", metavar="USER", help=_h("run_as")),
    workspace: str = typer.Option(
        _D.workspace, "--workspace", metavar="MODE", help=_h("workspace")
    ),
    in_process: bool = typer.Option(_D.in_process, "--in-process", help=_h("in_process")),
) -> None:
    """Claim runs from POOL and execute each in a child process, until stopped (or, with
    --burst, until the pool is empty). SIGTERM/Ctrl-C: finish running runs, then exit."""
    if run_as is not None:  # a clear error now, not after the exec
        from conveyor.worker.executors.isolation import RunAs

        RunAs.lookup(run_as)
    options = WorkerOptions(
        pool=pool,
        limit=limit,
        labels=tuple(label),
        burst=burst,
        name=name,
        max_runs=max_runs,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
        shutdown_timeout=shutdown_timeout,
        work_dir=work_dir.absolute() if work_dir else None,
        run_as=run_as,
        workspace=workspace,
        in_process=in_process,
        debug=logging.getLogger().level == logging.DEBUG,
    )
    exec_worker(options)


def exec_worker(options: WorkerOptions) -> NoReturn:
    """Replace this process with the worker ``options`` describe (a fresh interpreter that
    imports only the worker, not the CLI)."""
    argv = options.to_argv()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, fixed arguments


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(worker_app, name="worker")
