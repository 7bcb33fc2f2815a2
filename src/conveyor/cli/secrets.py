"""`conveyor secret set NAME | ls | rm NAME` (``conveyor secrets`` works too).

A value is read from stdin (or a hidden prompt on a terminal), never from the command line, so it
does not land in shell history or ``ps``. Values are stored encrypted; nothing here prints one.
"""

from __future__ import annotations

import json
import sys

import typer

from conveyor._names import check_secret_name
from conveyor.cli._common import client, console, print_table
from conveyor.errors import ConfigError

__all__ = ["register"]

secret_app = typer.Typer(
    name="secret",
    help="The server's encrypted secret store (used by ${NAME} templates on workers).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(secret_app, name="secret")
    app.add_typer(secret_app, name="secrets", hidden=True)


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read()
        if value.endswith("\n"):
            value = value[:-1]
            if value.endswith("\r"):
                value = value[:-1]
    if not value:
        raise ConfigError(
            f"no value given for secret {name!r}",
            hint=f'pipe it in: printf %s "$VALUE" | conveyor secret set {name}',
        )
    return value


@secret_app.command("set")
def set_(name: str = typer.Argument(..., help="Secret name, as used in ${NAME}.")) -> None:
    """Store a secret; the value is read from stdin (one trailing newline is dropped)."""
    check_secret_name(name)
    value = _read_value(name)
    with client() as api:
        api.set_secret(name, value)
    console.print(f"stored secret {name}")


@secret_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List secret names (never values)."""
    from rich.table import Table

    with client() as api:
        secrets = api.list_secrets()
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in secrets], indent=2))
        return
    table = Table(title_justify="left")
    for column in ("name", "created", "updated"):
        table.add_column(column, no_wrap=True)
    for secret in secrets:
        table.add_row(
            secret.name,
            secret.created.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            secret.updated.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        )
    print_table(table)


@secret_app.command("rm")
def rm(name: str = typer.Argument(..., help="Secret name.")) -> None:
    """Delete a secret."""
    with client() as api:
        api.delete_secret(name)
    console.print(f"deleted secret {name}")
