"""`conveyor pool create | ls`: work pools (``conveyor pools`` works too)."""

from __future__ import annotations

import json

import typer

from conveyor._names import check_pool_name
from conveyor.cli._common import client, console

__all__ = ["register"]

pool_app = typer.Typer(name="pool", help="Work pools: named queues of runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(pool_app, name="pool")
    app.add_typer(pool_app, name="pools", hidden=True)


@pool_app.command("create")
def create(
    name: str = typer.Argument(..., help="Pool name."),
    type: str = typer.Option("process", "--type", help="Pool type: process, dask, ..."),
    description: str = typer.Option("", "--description", help="What the pool is for."),
) -> None:
    """Create a work pool."""
    check_pool_name(name)
    with client() as api:
        pool = api.create_pool(name, type=type, description=description)
    console.print(f"created pool {pool.name} (type {pool.type})")


@pool_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List work pools."""
    from rich.table import Table

    with client() as api:
        pools = api.list_pools()
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in pools], indent=2))
        return
    table = Table(title_justify="left")
    for column in ("name", "type", "description", "created"):
        table.add_column(column)
    for pool in pools:
        created = pool.created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(pool.name, pool.type, pool.description, created)
    console.print(table)
