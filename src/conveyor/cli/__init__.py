"""`conveyor ...`: the command line.

Each command family lives in its own module exposing ``register(app)``; this module wires them
together and turns a `ConveyorError` into a one-line message plus a hint (a traceback only with
``--debug``). Anything else that escapes a command (a refused request model, a bug) is still
one line and a hint, never a traceback.

A command line builds only the family it runs: `COMMANDS` maps the first word of a command
(``runs`` in ``conveyor --debug runs ls``) to the module that registers it, and `main` imports
and registers that module alone. Typer would otherwise build every command of every family on
each call (their signatures, type hints and options: ~15 ms), and importing the other families'
modules costs about as much again. Without a known first word (``conveyor --help``, a typo) the
whole command line is built, so help lists everything and a wrong word gets the usual error.
`app` is that whole command line, for tests and tools.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

# A command line answers in a blink: httpx's own command line (which pulls pygments in at import
# time) is never used here.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import typer
from rich.markup import escape

from conveyor._logging import configure as configure_logging
from conveyor.cli._common import err_console
from conveyor.cli._deferred import defer_unused_rich_modules
from conveyor.errors import ConveyorError

defer_unused_rich_modules()  # before any --help loads typer.rich_utils

__all__ = ["COMMANDS", "FAMILIES", "app", "build_app", "main"]

FAMILIES = (
    "bundle",
    "cache",
    "server",
    "pools",
    "deployments",
    "deploy",
    "project",
    "runs",
    "secrets",
    "worker",
    "workers",
    "credentials",
    "ui",
    "register",
    "agent",
)
"""The modules of `conveyor.cli` that register commands, in the order help lists them."""

COMMANDS: dict[str, str] = {
    "agent": "agent",
    "bundle": "bundle",
    "cache": "cache",
    "credentials": "credentials",
    "deploy": "deploy",
    "deployment": "deployments",
    "deployments": "deployments",
    "init": "project",
    "pool": "pools",
    "pools": "pools",
    "project": "project",
    "register": "register",
    "run": "deploy",
    "runs": "runs",
    "secret": "secrets",
    "secrets": "secrets",
    "server": "server",
    "ui": "ui",
    "worker": "worker",
    "workers": "workers",
}
"""Each top-level command (hidden aliases included) → the module of `FAMILIES` that registers
it (a test checks that the two agree)."""

_DEBUG = {"on": False}


def _show_version(value: bool) -> None:
    if value:
        from conveyor._version import __version__

        typer.echo(f"conveyor {__version__}")
        raise typer.Exit(0)


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_show_version,
        is_eager=True,
    ),
) -> None:
    _DEBUG["on"] = debug
    configure_logging(
        debug=debug, worker=False, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def build_app(families: Sequence[str] = FAMILIES) -> typer.Typer:
    """The command line with the commands of ``families`` (modules named in `FAMILIES`)."""
    root = typer.Typer(
        name="conveyor",
        help="Store workflow code and get exactly that code back onto the machines that run it.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    root.callback()(_root)
    for family in families:
        importlib.import_module(f"conveyor.cli.{family}").register(root)
    return root


def _families(args: Sequence[str]) -> Sequence[str]:
    """The family of the command ``args`` run (the first word that is not an option: the root
    options are flags), or every family when there is none or it is unknown."""
    word = next((arg for arg in args if not arg.startswith("-")), None)
    family = COMMANDS.get(word) if word is not None else None
    return (family,) if family is not None else FAMILIES


_WHOLE: dict[str, typer.Typer] = {}


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole command line, built when first asked for
        if name not in _WHOLE:
            _WHOLE[name] = build_app()
        return _WHOLE[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conveyor`` script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = build_app(_families(args))(args=args, standalone_mode=False)
    except ConveyorError as exc:
        if _DEBUG["on"]:
            raise
        _print_error(exc.message, exc.hint)
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
    except Exception as exc:
        if _DEBUG["on"]:
            raise
        _print_error(*_describe(exc))
        return 1
    return result if isinstance(result, int) else 0


def _print_error(message: str, hint: str | None) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err_console.print(f"[dim]hint:[/] {escape(hint)}", highlight=False)


def _describe(exc: Exception) -> tuple[str, str | None]:
    """One line and a hint for an exception that is not a `ConveyorError`."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from conveyor.schemas import describe_errors

        return describe_errors(exc.errors())
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return (
        f"unexpected error: {text}",
        "this is a bug in Conveyor: run the command again with --debug and report the traceback",
    )
