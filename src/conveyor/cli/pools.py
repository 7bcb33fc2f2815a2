"""`conveyor pool create | ls | preview`: work pools (``conveyor pools`` works too).

```
conveyor pool create k8s --type kubernetes [--base-job-template template.json]
conveyor pool preview k8s hello/nightly      # exactly what the worker would submit
```
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from conveyor._names import check_pool_name
from conveyor.cli._common import client, console, note, print_table

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
    base_job_template: Path | None = typer.Option(
        None,
        "--base-job-template",
        help="JSON file: job_configuration + variables (default: the type's template).",
    ),
) -> None:
    """Create a work pool."""
    from conveyor._jobs import check_template
    from conveyor.errors import ConfigError

    check_pool_name(name)
    template = None
    if base_job_template is not None:
        try:
            template = check_template(json.loads(base_job_template.read_text()), pool_type=type)
        except OSError as exc:
            raise ConfigError(f"cannot read {base_job_template}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{base_job_template} is not valid JSON: {exc}") from None
    with client() as api:
        pool = api.create_pool(name, type=type, description=description, base_job_template=template)
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
    print_table(table)


@pool_app.command("preview")
def preview(
    pool: str = typer.Argument(..., help="Pool name."),
    deployment: str = typer.Argument(..., help="FLOW/DEPLOYMENT"),
) -> None:
    """Print exactly what the pool's worker would submit for a run of DEPLOYMENT (a Docker
    container request, a Kubernetes Job, a process job), secrets as names only. A process
    worker applies the run's job variables (not a rendered job_configuration): what it reads is
    printed, and the keys it would leave unused are named on stderr."""
    from conveyor._jobs import process_unapplied
    from conveyor.cli._common import load_settings
    from conveyor.cli.deploy import split_deployment
    from conveyor.errors import ConfigError
    from conveyor.worker.executors.containers import submission

    flow_name, name = split_deployment(deployment)
    settings = load_settings()
    with client() as api:
        found = {p.name: p for p in api.list_pools()}.get(pool)
        if found is None:
            raise ConfigError(f"work pool {pool!r} does not exist", hint="see `conveyor pool ls`")
        target = api.get_deployment(flow_name, name)
    submitted = submission(
        found.type,
        found.base_job_template,
        run_id="<run-id>",
        source=target.source,
        version=target.version,
        entrypoint=target.entrypoint,
        flow_name=target.flow_name,
        deployment_name=target.name,
        job_variables=target.job_variables,
        api_url=settings.api_url,
    )
    typer.echo(json.dumps(submitted, indent=2, sort_keys=True))
    if found.type == "process":
        written, unread = process_unapplied(found.base_job_template, target.job_variables)
        if written:
            note(
                f"a process worker applies the job variables above and does not render pool "
                f"{pool}'s job_configuration: its {', '.join(written)} do nothing as written there"
            )
        if unread:
            note(f"job variables a process worker does not read: {', '.join(unread)}")
