"""Transfer progress: the command line watches blob transfers without sources printing (a base
module, so that the command line can watch without importing the blob sources).

A caller (the CLI) installs a `Watcher` with `watching`; transfers call `start(what, files,
bytes)` and get back a callback ``(files_done, bytes_done)``, or None when nobody watches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Update", "Watcher", "start", "watching"]

Update = Callable[[int, int], None]
Watcher = Callable[[str, int, int], "Update | None"]

_WATCHER: ContextVar[Watcher | None] = ContextVar("conveyor_blob_progress", default=None)


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Report the transfers made inside the block to ``watcher``."""
    token = _WATCHER.set(watcher)
    try:
        yield
    finally:
        _WATCHER.reset(token)


def start(what: str, files: int, size: int) -> Update | None:
    """The progress callback for a transfer of ``files`` files, ``size`` bytes (or None)."""
    watcher = _WATCHER.get()
    return watcher(what, files, size) if watcher is not None else None
