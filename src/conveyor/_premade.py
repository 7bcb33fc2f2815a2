"""Directories made ahead, in a background thread, while a fill waits for its source.

Making a directory is one of the slowest metadata operations on some file systems (a new inode
and a block each), and a checkout of a large tree has thousands. A new version of a source
mostly has the directories of the previous one, so a fill can make those while the source is
still fetching (a git fetch: a network round trip and a subprocess to wait for), and reconcile
once it knows the new tree: `Premade.settle` removes those the tree does not have (empty, made
by this fill) and says which it may use.

Where making directories is slow enough that the fetch is over before they are (ext4 on a
virtual disk: 100-250 us each, ~0.25 s for a 1,200-directory tree against a ~0.1 s fetch), the
next fill need not wait for them at all: after a fill, `make_spare` makes the same directories
again, in the background, as a spare set for the source's next fill, and `Premade` puts a spare
of the same shape in place before making what is still missing (one rename). A source keeps one
spare, of the shape of its latest checkout; the cache's eviction removes it with the source's
other entries.

Nothing here is trusted: the directories are empty and the tree's own writer makes whatever is
still missing; a fill's seal and checks see the final tree as always.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Iterable

__all__ = ["SPARE_PREFIX", "Premade", "discard_spares", "make_spare"]

SPARE_PREFIX = ".spare-dirs-"
"""A spare set of directories in a source's cache directory: ``.spare-dirs-<shape>-<8 hex>``."""

logger = logging.getLogger(__name__)


class Premade:
    """Makes ``dirs`` (relative paths) below the existing directory ``top`` in a thread,
    parents first, stopping at the first error; with ``spares`` (a source's directory), first
    puts a spare of the same shape in place of ``top``, whose directories count as made."""

    def __init__(self, top: str, dirs: Iterable[str], *, spares: str | None = None) -> None:
        self.top = top
        self._wanted = sorted(d for d in dirs if d)  # a parent sorts before its children
        self._spares = spares
        self._made: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-premade", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._spares is not None and self._wanted:
            _take_spare(self._spares, _shape_id(self._wanted), self.top)
        for rel in self._wanted:
            if self._stop.is_set():
                return
            try:
                os.mkdir(f"{self.top}/{rel}")
            except FileExistsError:  # in the spare put in place: empty, made for this shape
                pass
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


def make_spare(key_dir: str, dirs: Iterable[str]) -> Premade | None:
    """Start making ``dirs`` in a spare in ``key_dir`` for the source's next fill, unless it has
    one of that shape (spares of another shape are removed) or there is nothing to make."""
    wanted = sorted(d for d in dirs if d)
    if not wanted:
        return None
    shape = _shape_id(wanted)
    try:
        spares = [n for n in os.listdir(key_dir) if n.startswith(SPARE_PREFIX)]
        if any(n.startswith(f"{SPARE_PREFIX}{shape}-") for n in spares):
            return None
        if spares:  # of another shape: no fill will take them
            discard_spares(key_dir)
        top = f"{key_dir}/{SPARE_PREFIX}{shape}-{secrets.token_hex(4)}"
        os.mkdir(top)
    except OSError as exc:
        logger.debug("no spare directories key_dir=%s error=%s", key_dir, exc)
        return None
    return Premade(top, wanted)


def discard_spares(key_dir: str) -> None:
    """Remove the source's spare directories (its scratch directory is evicted: the next fill
    starts cold)."""
    try:
        names = [n for n in os.listdir(key_dir) if n.startswith(SPARE_PREFIX)]
    except OSError:
        return
    for name in names:
        shutil.rmtree(f"{key_dir}/{name}", ignore_errors=True)


def _take_spare(key_dir: str, shape: str, dest: str) -> None:
    """Put a spare of ``shape`` in place of the empty directory ``dest`` (if there is one)."""
    try:
        names = sorted(n for n in os.listdir(key_dir) if n.startswith(f"{SPARE_PREFIX}{shape}-"))
    except OSError:
        return
    for name in names:
        try:
            os.rename(f"{key_dir}/{name}", dest)  # replaces the empty directory
            return
        except OSError as exc:  # taken by another fill meanwhile
            logger.debug("spare directories not used path=%s error=%s", name, exc)


def _shape_id(wanted: list[str]) -> str:
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
