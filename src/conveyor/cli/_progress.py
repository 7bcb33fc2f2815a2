"""Rich progress bars for blob transfers (push and pull) in the command line.

`transfer_progress()` watches the blob transfers made inside it: a transfer of at least
``MIN_FILES`` files or ``MIN_BYTES`` bytes shows a bar with bytes and file counts on stderr (only
when stderr is a terminal, or when ``CONVEYOR_PROGRESS=1`` asks for it); smaller ones stay quiet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from conveyor.cli._common import err_console

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["MIN_BYTES", "MIN_FILES", "transfer_progress"]

MIN_FILES = 20
MIN_BYTES = 1 << 20


@contextmanager
def transfer_progress() -> Iterator[None]:
    from conveyor._transfers import Update, watching

    wanted = os.environ.get("CONVEYOR_PROGRESS", "")
    enabled = wanted == "1" or (wanted != "0" and err_console.is_terminal)
    if not enabled:
        yield
        return
    with ExitStack() as stack:
        bars: list[Progress] = []

        def watch(what: str, files: int, size: int) -> Update | None:
            if files < MIN_FILES and size < MIN_BYTES:
                return None
            if not bars:  # rich's progress bars, imported for the first transfer that shows one
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TransferSpeedColumn,
                )

                bars.append(
                    stack.enter_context(
                        Progress(
                            TextColumn("{task.description}"),
                            BarColumn(),
                            DownloadColumn(),  # bytes; the description counts the files
                            TransferSpeedColumn(),
                            console=err_console,
                            transient=False,
                        )
                    )
                )
            bar = bars[0]
            task = bar.add_task(what, total=size, files=files)
            columns_files = files

            def update(done_files: int, done_bytes: int) -> None:
                bar.update(task, completed=done_bytes)
                bar.update(task, description=f"{what} ({done_files}/{columns_files} files)")

            return update

        with watching(watch):
            yield
