"""`conveyor cache` commands: what the code cache holds, and making room in it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer

from conveyor.cli._common import console, load_settings, print_table

if TYPE_CHECKING:
    from conveyor.cache import CacheEntry, CodeCache

__all__ = ["format_size", "register"]

cache_app = typer.Typer(
    name="cache",
    help="Inspect and prune the local code cache (CONVEYOR_CACHE_DIR): checkouts of versions, "
    "and the scratch directories (git mirrors) of the sources they came from.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(cache_app, name="cache")


def format_size(size: int) -> str:
    """``512 B``, ``4.0 KiB``, ``12.3 MiB``, ``2.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _open_cache() -> CodeCache:
    from conveyor.cache import CodeCache

    return CodeCache.from_settings(load_settings())


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(entries: list[CacheEntry], *, title: str, leased: bool = True) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("source", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("last used", no_wrap=True)
    if leased:
        table.add_column("leased", no_wrap=True)
    for entry in entries:
        row = [
            entry.source,
            entry.kind,
            entry.version or "-",
            format_size(entry.size),
            str(entry.files),
            _when(entry.last_used),
        ]
        if leased:
            row.append("yes" if entry.leased else "no")
        table.add_row(*row)
    print_table(table)


def _counted(entries: list[CacheEntry]) -> str:
    """``3 version(s)``, or ``3 version(s) and 1 scratch directory``."""
    scratch = sum(e.kind == "scratch" for e in entries)
    envs = sum(e.kind == "env" for e in entries)
    text = f"{len(entries) - scratch - envs} version(s)"
    if scratch:
        text += f" and {scratch} scratch director{'y' if scratch == 1 else 'ies'}"
    if envs:
        text += f" and {envs} environment{'' if envs == 1 else 's'}"
    return text


@cache_app.command("ls")
def ls() -> None:
    """List the checkouts and scratch directories in the cache, least recently used first
    ("leased": in use by a run, or by a fetch for a scratch directory)."""
    cache = _open_cache()
    entries = cache.entries()
    if not entries:
        console.print(f"the code cache at {cache.root} is empty")
        return
    _table(entries, title=f"code cache {cache.root}")


@cache_app.command("info")
def info() -> None:
    """Where the cache is, its budget, and how much of it is used."""
    from rich.table import Table

    cache = _open_cache()
    summary = cache.info()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("root", str(summary.root))
    table.add_row("budget", f"{format_size(summary.max_bytes)} ({summary.max_bytes} bytes)")
    table.add_row("used", f"{format_size(summary.used_bytes)} ({summary.used_bytes} bytes)")
    table.add_row(
        "files",
        f"{format_size(summary.object_bytes)} in {summary.object_count} distinct file(s), "
        "shared by the versions",
    )
    table.add_row(
        "scratch",
        f"{format_size(summary.scratch_bytes)} in {summary.scratch_count} director"
        + ("y" if summary.scratch_count == 1 else "ies"),
    )
    table.add_row("environments", f"{format_size(summary.env_bytes)} in {summary.env_count}")
    table.add_row("versions", str(summary.entry_count - summary.scratch_count - summary.env_count))
    table.add_row("leased", str(summary.leased_count))
    print_table(table)


@cache_app.command("prune")
def prune(
    max_bytes: str | None = typer.Option(
        None,
        "--max-bytes",
        metavar="SIZE",
        help="Shrink to this size (1048576, 500MB, 2GiB; 0 empties it) instead of the budget.",
    ),
) -> None:
    """Evict least-recently-used checkouts and scratch directories that nothing is using, until
    the cache fits."""
    from conveyor.settings import parse_size

    limit = None if max_bytes is None else parse_size(max_bytes, name="--max-bytes")
    cache = _open_cache()
    evicted = cache.prune(max_bytes=limit)
    if evicted:
        _table(evicted, title="evicted", leased=False)
    left = cache.entries()
    freed = sum(e.freed for e in evicted)
    leased = sum(e.leased for e in left)
    console.print(
        f"evicted {_counted(evicted)}, freed {format_size(freed)}; "
        f"cache now {format_size(cache.info().used_bytes)} in {_counted(left)}"
        + (f", {leased} leased" if leased else "")
    )
