"""`conveyor ...`: the command line.

Each command family lives in its own module exposing ``register(app)``; this module wires them
together and turns a `ConveyorError` into a one-line message plus a hint (a traceback only with
``--debug``).
"""

from __future__ import annotations

import logging

import typer
from rich.markup import escape

from conveyor.cli import (
    bundle,
    cache,
    credentials,
    deploy,
    deployments,
    pools,
    runs,
    secrets,
    server,
    ui,
    worker,
    workers,
)
from conveyor.cli._common import err_console
from conveyor.errors import ConveyorError

__all__ = ["app", "main"]

app = typer.Typer(
    name="conveyor",
    help="Store workflow code and get exactly that code back onto the machines that run it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    _DEBUG["on"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (
    bundle,
    cache,
    server,
    pools,
    deployments,
    deploy,
    runs,
    secrets,
    worker,
    workers,
    credentials,
    ui,
):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conveyor`` script; returns the exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except ConveyorError as exc:
        if _DEBUG["on"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {escape(exc.hint)}", highlight=False)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except typer.TyperException as exc:  # typer's click: usage errors, bad parameters
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {escape(str(exc))}", highlight=False)
        return int(getattr(exc, "exit_code", 2))
    return result if isinstance(result, int) else 0
