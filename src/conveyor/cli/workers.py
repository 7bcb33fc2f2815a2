"""`conveyor workers ls`: workers by their last heartbeat (`conveyor worker start` runs one)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from conveyor.cli._common import client, console, print_table

__all__ = ["register"]

workers_app = typer.Typer(
    name="workers", help="Workers and their heartbeats.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(workers_app, name="workers")


@workers_app.command("ls")
def ls(
    pool: str | None = typer.Option(None, "--pool", help="Only workers of this pool."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List workers: online while their last heartbeat is recent."""
    from rich.table import Table

    with client() as api:
        workers = api.list_workers(pool=pool)
    if as_json:
        typer.echo(json.dumps([w.model_dump(mode="json") for w in workers], indent=2))
        return
    if not workers:
        console.print("no workers yet: start one with `conveyor worker start --pool POOL`")
        return
    now = datetime.now(UTC)
    table = Table(title_justify="left")
    for column in ("worker", "pool", "status", "running", "labels", "last heartbeat"):
        table.add_column(column, no_wrap=True)
    for w in workers:
        age = (now - w.last_heartbeat).total_seconds()
        style = "green" if w.status == "online" else "dim"
        table.add_row(
            w.name,
            w.pool,
            f"[{style}]{w.status}[/]",
            f"{w.running}/{w.limit}",
            ", ".join(w.labels) or "-",
            f"{age:.0f}s ago",
        )
    print_table(table)
