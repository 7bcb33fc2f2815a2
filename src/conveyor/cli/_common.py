"""What every command family shares: consoles, settings, the client, printing a table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from conveyor.settings import Settings

if TYPE_CHECKING:
    from rich.table import Table

    from conveyor.client import ConveyorClient
    from conveyor.schemas import RunState

__all__ = [
    "OUTAGE_SECONDS",
    "client",
    "console",
    "err_console",
    "exit_code",
    "load_settings",
    "note",
    "print_table",
    "through_outages",
]

T = TypeVar("T")

OUTAGE_SECONDS = 300.0
"""How long a watcher (`run --watch`, `runs logs --follow`) waits for a server that is away."""

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# Wide enough to measure any table's natural width; never a width anything is printed at.
_MEASURE_WIDTH = 100_000


def note(message: str) -> None:
    """``note: MESSAGE`` on stderr, as written (no markup): what a command tells beside its
    output."""
    err_console.print(f"note: {message}", highlight=False, markup=False)


def load_settings() -> Settings:
    """Settings for this command, read once from the environment."""
    return Settings.from_env()


def client(settings: Settings | None = None) -> ConveyorClient:
    """A `ConveyorClient` for this command (embedded unless ``CONVEYOR_API_URL`` is set)."""
    from conveyor.connect import connect

    return connect(settings or load_settings())


def exit_code(state: RunState) -> int:
    """What a watcher (`run --watch`, `runs logs --follow`) exits with once its run is final: 0
    when it completed, 1 when it failed, crashed or was cancelled (as Prefect's `--watch`)."""
    return 0 if state.value == "completed" else 1


def through_outages(
    request: Callable[[], T], *, deadline: float | None = None, limit: float = OUTAGE_SECONDS
) -> T:
    """``request()``, asked again while the server is unavailable (restarted, or its database
    down), so that a watcher rides out an outage as the workers do: one note on stderr when the
    server goes away, one when it answers again. Retried with the shared backoff
    (`conveyor._retry`, waits up to 5 s) for ``limit`` seconds, or until ``deadline``
    (`time.monotonic`); then the error."""
    from conveyor._retry import RetryPolicy, call
    from conveyor.errors import ServerUnavailable

    budget = limit if deadline is None else max(min(limit, deadline - time.monotonic()), 0.0)
    away: list[ServerUnavailable] = []

    def ask() -> T:
        try:
            return request()
        except ServerUnavailable as exc:
            if not away:
                err_console.print(f"note: {exc.message}; waiting for it", markup=False)
            away.append(exc)
            raise

    answer = call(
        ask,
        policy=RetryPolicy(budget=budget, cap=5.0, max_attempts=1_000_000),
        retry_if=lambda exc: isinstance(exc, ServerUnavailable),
    )
    if away:
        err_console.print("note: the server answers again", markup=False)
    return answer


def print_table(table: Table) -> None:
    """Print ``table`` without losing a column or a header.

    Piped or redirected (stdout not a terminal), nothing is cut: the table is as wide as its
    content. In a terminal too narrow for it, the widest columns give up width first, never below
    their header's width, and their cells fold onto more lines instead of being cut; if even the
    headers do not fit, the table is wider than the terminal, which wraps its lines.
    """
    from rich.measure import Measurement

    wide = console.options.update_width(_MEASURE_WIDTH)
    natural = Measurement.get(console, wide, table)
    if not console.is_terminal:
        if natural.maximum > console.width:
            table.width = natural.maximum  # print(width=...) cannot exceed the console's width
        console.print(table, crop=False)
        return
    floors = [  # a column's header, and any minimum the command gave it, stay readable
        max(
            column.min_width or 0,
            console.measure(column.header, options=wide).maximum if table.show_header else 0,
        )
        for column in table.columns
    ]
    contents = [
        max([floor, *(console.measure(cell, options=wide).maximum for cell in column.cells)])
        for floor, column in zip(floors, table.columns, strict=True)
    ]
    budget = console.width - (natural.maximum - sum(contents))  # minus borders and padding
    cap = _widest_fitting(contents, floors, budget)
    for floor, content, column in zip(floors, contents, table.columns, strict=True):
        column.min_width = floor
        if content > max(cap, floor):
            column.max_width = max(cap, floor)
            column.no_wrap = False
            column.overflow = "fold"
    if cap == 0:
        table.width = natural.maximum - sum(contents) + sum(map(min, contents, floors))
    console.print(table, crop=False)


def _widest_fitting(contents: list[int], floors: list[int], budget: int) -> int:
    """The largest width every column can be capped at (none below its floor) to fit ``budget``;
    0 when even the floors do not fit."""
    for cap in range(max(contents, default=0), 0, -1):
        if (
            sum(
                min(content, max(cap, floor))
                for content, floor in zip(contents, floors, strict=True)
            )
            <= budget
        ):
            return cap
    return 0
