"""Directories made ahead, in a background thread, while a fill waits for its source.

Making a directory is one of the slowest metadata operations on some file systems (a new inode
and a block each), and a checkout of a large tree has thousands. A new version of a source
mostly has the directories of the previous one, so a fill can make those while the source is
still fetching (a git fetch: a network round trip and a subprocess to wait for), and reconcile
once it knows the new tree: `Premade.settle` removes those the tree does not have (empty, made
by this fill) and says which it may use.

Nothing here is trusted: the directories are empty and the tree's own writer makes whatever is
still missing; a fill's seal and checks see the final tree as always.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

__all__ = ["Premade"]

logger = logging.getLogger(__name__)


class Premade:
    """Makes ``dirs`` (relative paths) below the existing directory ``top`` in a thread,
    parents first, stopping at the first error."""

    def __init__(self, top: str, dirs: Iterable[str]) -> None:
        self.top = top
        self._wanted = sorted(d for d in dirs if d)  # a parent sorts before its children
        self._made: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-premade", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for rel in self._wanted:
            if self._stop.is_set():
                return
            try:
                os.mkdir(f"{self.top}/{rel}")
            except OSError as exc:  # the writer makes what is missing
                logger.debug("directory not made ahead path=%s error=%s", rel, exc)
                return
            self._made.append(rel)

    def join(self) -> list[str]:
        """Wait for the thread (it only makes directories); what it made."""
        self._thread.join()
        return self._made

    def cancel(self) -> None:
        """Stop making directories and wait for the thread (before the tree is removed)."""
        self._stop.set()
        self._thread.join()

    def settle(self, needed: set[str]) -> set[str]:
        """Remove the directories made ahead that ``needed`` (every directory the tree has)
        lacks, deepest first; returns those that stay. `OSError` when one is not empty."""
        made = self.join()
        for rel in sorted(set(made) - needed, key=len, reverse=True):
            os.rmdir(f"{self.top}/{rel}")
        return needed.intersection(made)
