"""`conveyor worker start`: claim runs from a pool and execute them.

The command checks its options, then replaces this process (``exec``: same PID, same signals)
with ``python -m conveyor.worker``, a lean entry point that does not keep the command line's
libraries in memory (see `conveyor.worker.__main__`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

__all__ = ["register", "worker_argv"]

worker_app = typer.Typer(help="Run a worker: claim runs from a pool and execute them.")


def worker_argv(
    *,
    pool: str,
    limit: int = 1,
    labels: list[str] | None = None,
    burst: bool = False,
    name: str | None = None,
    max_runs: int | None = None,
    lease_seconds: float | None = None,
    poll_seconds: float | None = None,
    shutdown_timeout: float | None = None,
    work_dir: Path | None = None,
    debug: bool = False,
) -> list[str]:
    """The ``python -m conveyor.worker`` command line for these options."""
    argv = [sys.executable, "-m", "conveyor.worker", "--pool", pool, "--limit", str(limit)]
    for label in labels or []:
        argv += ["--label", label]
    if burst:
        argv.append("--burst")
    if name:
        argv += ["--name", name]
    for flag, value in (
        ("--max-runs", max_runs),
        ("--lease-seconds", lease_seconds),
        ("--poll-seconds", poll_seconds),
        ("--shutdown-timeout", shutdown_timeout),
        ("--work-dir", work_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if debug:
        argv.append("--debug")
    return argv


@worker_app.command("start")
def start(
    pool: str = typer.Option("default", "--pool", help="Work pool to claim runs from."),
    limit: int = typer.Option(1, "--limit", min=1, help="Runs executed at the same time."),
    label: list[str] = typer.Option([], "--label", help="Worker label (repeatable)."),
    burst: bool = typer.Option(False, "--burst", help="Exit once the pool is empty."),
    name: str | None = typer.Option(None, "--name", help="Worker name (default: <host>-<pid>)."),
    max_runs: int | None = typer.Option(
        None, "--max-runs", min=1, help="Exit after this many runs."
    ),
    lease_seconds: float = typer.Option(
        30.0, "--lease-seconds", min=0.5, help="How long a claim lasts without a heartbeat."
    ),
    poll_seconds: float = typer.Option(
        2.0, "--poll-seconds", min=0.0, help="Long-poll length when the pool is empty."
    ),
    shutdown_timeout: float = typer.Option(
        30.0, "--shutdown-timeout", min=0.0, help="On SIGTERM, how long running runs may finish."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Where run workspaces go (default: $CONVEYOR_HOME/work)."
    ),
) -> None:
    """Claim runs from POOL and execute each in a child process, until stopped (or, with
    --burst, until the pool is empty). SIGTERM/Ctrl-C: finish running runs, then exit."""
    argv = worker_argv(
        pool=pool,
        limit=limit,
        labels=label,
        burst=burst,
        name=name,
        max_runs=max_runs,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
        shutdown_timeout=shutdown_timeout,
        work_dir=work_dir.absolute() if work_dir else None,
        debug=logging.getLogger().level == logging.DEBUG,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, fixed arguments


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(worker_app, name="worker")
