"""`conveyor agent [local|docker|kubernetes] start -l LABEL`: the first generation's agents.

An agent is a worker (`conveyor worker start`) with labels: it claims the runs of its pool whose
deployments' labels it carries, every one of them (a worker always carries its host's name, so
flows in `Local` storage, labelled with the registering host, run only there). ``local`` is the
default ``process`` pool; ``docker`` and ``kubernetes`` default to pools of those names, run by
the executor registered for their type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import typer

from conveyor.cli.worker import exec_worker
from conveyor.worker.options import WorkerOptions

__all__ = ["register"]

agent_app = typer.Typer(help="Run an agent: a worker that claims runs by label.")
_D = WorkerOptions()


def _starter(default_pool: str) -> Callable[..., None]:
    def start(
        label: list[str] = typer.Option([], "--label", "-l", help="Label (repeatable)."),
        pool: str = typer.Option(default_pool, "--pool", help="Work pool to claim runs from."),
        limit: int = typer.Option(_D.limit, "--limit", min=1, help="Runs at the same time."),
        name: str | None = typer.Option(None, "--name", help="Agent name (default host-pid)."),
        burst: bool = typer.Option(False, "--burst", help="Exit once the pool is empty."),
        max_runs: int | None = typer.Option(None, "--max-runs", min=1, help="Exit after N runs."),
    ) -> None:
        """Claim runs carrying these labels and execute them, until stopped."""
        options = WorkerOptions(
            pool=pool,
            limit=limit,
            labels=tuple(label),
            burst=burst,
            name=name,
            max_runs=max_runs,
            debug=logging.getLogger().level == logging.DEBUG,
        )
        exec_worker(options)

    return start


agent_app.command("start")(_starter("default"))
for _kind, _pool in (("local", "default"), ("docker", "docker"), ("kubernetes", "kubernetes")):
    _sub = typer.Typer(help=f"A {_kind} agent.")
    _sub.command("start")(_starter(_pool))
    agent_app.add_typer(_sub, name=_kind)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(agent_app, name="agent")
