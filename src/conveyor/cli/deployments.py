"""`conveyor deployments ls | inspect FLOW/NAME | versions FLOW/NAME`."""

from __future__ import annotations

import json
from datetime import datetime

import typer

from conveyor.cli._common import client, console, print_table
from conveyor.errors import ConfigError

__all__ = ["register", "split_deployment"]

deployments_app = typer.Typer(
    name="deployments",
    help="Deployments, addressed as FLOW/NAME (create them with `conveyor deploy`).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(deployments_app, name="deployments")
    app.add_typer(deployments_app, name="deployment", hidden=True)


def split_deployment(ref: str) -> tuple[str, str]:
    """``"flow/name"`` → ``("flow", "name")``, or a one-line error."""
    flow_name, sep, name = ref.partition("/")
    if not sep or not flow_name or not name or "/" in name:
        raise ConfigError(
            f"{ref!r} is not a deployment: expected FLOW/NAME", hint="conveyor deployments ls"
        )
    return flow_name, name


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(version: str) -> str:
    return version if len(version) <= 19 else version[:19] + "…"


@deployments_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List deployments with their current revision and code version."""
    from rich.table import Table

    with client() as api:
        deployments = api.list_deployments()
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in deployments], indent=2))
        return
    if not deployments:
        console.print(
            "no deployments yet: create one with `conveyor deploy FILE:FUNCTION --name NAME`"
        )
        return
    table = Table(title_justify="left")
    for column in ("deployment", "revision", "version", "source", "pool", "updated"):
        table.add_column(column, no_wrap=column != "source")
    for d in deployments:
        table.add_row(
            f"{d.flow_name}/{d.name}",
            str(d.revision),
            _short(d.version) + (" (follows ref)" if d.follow_ref else ""),
            str(d.source.get("kind", "?")),
            d.work_pool,
            _when(d.updated),
        )
    print_table(table)


@deployments_app.command("inspect")
def inspect(
    deployment: str = typer.Argument(..., metavar="FLOW/NAME"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one deployment in full."""
    flow_name, name = split_deployment(deployment)
    with client() as api:
        d = api.get_deployment(flow_name, name)
    if as_json:
        typer.echo(d.model_dump_json(indent=2))
        return
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("deployment", f"{d.flow_name}/{d.name}"),
        ("id", d.id),
        ("revision", str(d.revision)),
        ("version", d.version + (" (follows its ref at run time)" if d.follow_ref else "")),
        ("entrypoint", d.entrypoint),
        ("source", json.dumps(d.source, sort_keys=True)),
        ("work pool", d.work_pool),
        ("parameters", json.dumps(d.parameters, sort_keys=True)),
        ("job variables", json.dumps(d.job_variables, sort_keys=True)),
        ("pull steps", json.dumps(d.pull_steps) if d.pull_steps else "-"),
        ("tags", ", ".join(d.tags) or "-"),
        ("retries", f"{d.retries} (delay {d.retry_delay_seconds:g}s)"),
        ("timeout", f"{d.timeout_seconds:g}s" if d.timeout_seconds else "-"),
        ("description", d.description or "-"),
        ("created", _when(d.created)),
        ("updated", _when(d.updated)),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    print_table(grid)


@deployments_app.command("versions")
def versions(
    deployment: str = typer.Argument(..., metavar="FLOW/NAME"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every revision of a deployment, newest first."""
    from rich.table import Table

    flow_name, name = split_deployment(deployment)
    with client() as api:
        revisions = api.list_deployment_versions(flow_name, name)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in revisions], indent=2))
        return
    table = Table(title=f"{flow_name}/{name}", title_justify="left")
    for column in ("revision", "version", "entrypoint", "source", "created"):
        table.add_column(column, no_wrap=column in {"revision", "version", "created"})
    for v in revisions:
        table.add_row(
            str(v.revision),
            v.version,
            v.entrypoint,
            json.dumps(v.source, sort_keys=True),
            _when(v.created),
        )
    print_table(table)
