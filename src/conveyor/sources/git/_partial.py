"""A partial checkout of one commit, for deploy's preflight: the listing first, files on demand.

`PartialCheckout.open` makes sure the commit is in the repository's mirror without its blobs
(a depth-1 ``blob:none`` fetch: commit and trees only, nothing when the mirror has the commit)
and lists its entries (``git ls-tree``, no blobs needed) — enough to check every path of the
tree and to know its directories (created when asked for or written into). Each
`PartialCheckout.fetch` then brings exactly the blobs asked for, in one request for those the
mirror lacks (found by a walk of those paths only), and writes them (modes and symlinks as a
checkout has them; the same path checks). Deploy asks for the flow's module, then for what it
imports, round by round (`conveyor._imports`).

The mirror is the one the code cache uses for this source (in its scratch directory): each step
holds the scratch lock through the ``scratch`` callable (`conveyor.cache.CodeCache.scratch`),
and a later full checkout of the same commit fetches only the blobs still missing. What is
written here is not a verified checkout and is never used to run a flow: deploy loads the flow
from it once, to learn its name and parameters, and removes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import SourceError
from conveyor.sources.base import FetchContext
from conveyor.sources.git._auth import AuthSession
from conveyor.sources.git._checkout import (
    GITLINK,
    SYMLINK,
    TreeEntry,
    TreeWriter,
    list_tree,
    select,
    write_blobs,
)
from conveyor.sources.git._mirror import Mirror

if TYPE_CHECKING:
    from conveyor.sources.git.repository import GitRepository

__all__ = ["PartialCheckout"]

Scratch = Callable[[], AbstractContextManager[FetchContext]]


class PartialCheckout:
    """Commit ``version`` of ``repo`` written into ``dest`` (an empty directory) file by file."""

    def __init__(self, repo: GitRepository, version: str, dest: Path, *, scratch: Scratch) -> None:
        self.repo = repo
        self.version = version
        self.dest = Path(dest)
        self.scratch = scratch
        self.entries: dict[str, TreeEntry] = {}
        self.written: set[str] = set()
        self.dirs: set[str] = {""}
        """Every directory of the commit ("" is the root)."""
        self._writer = TreeWriter(self.dest)

    @property
    def whole_tree_needed(self) -> bool:
        """True when a partial checkout cannot stand for the checkout (its submodules)."""
        return self.repo.include_submodules and any(
            e.mode == GITLINK for e in self.entries.values()
        )

    @property
    def files(self) -> list[str]:
        """Every file and symlink of the checkout (paths relative to its root)."""
        return [p for p, e in self.entries.items() if e.kind == "blob"]

    @property
    def links(self) -> list[str]:
        return [p for p, e in self.entries.items() if e.mode == SYMLINK]

    def open(self) -> PartialCheckout:
        """Fetch the commit without blobs if needed, list it and create its directories."""
        with self.scratch() as ctx, self._mirror(ctx) as (mirror, auth):
            if not mirror.has_commit(self.version):
                mirror.fetch_commit(self.version, auth, blobs=False)
            entries = select(
                list_tree(mirror.path, self.version),
                self.repo.directories,
                sha=self.version,
                source=self.repo.url,
            )
        self.entries = {e.path: e for e in entries}
        for entry in entries:
            parent = os.path.dirname(entry.path)
            while parent not in self.dirs:
                self.dirs.add(parent)
                parent = os.path.dirname(parent)
            if entry.mode == GITLINK:
                self.dirs.add(entry.path)
        return self

    def directory(self, path: str) -> Path:
        """Create directory ``path`` of the checkout (directories are created only when asked
        for, or when a file is written into them); `KeyError` if the commit has none."""
        if path not in self.dirs:
            raise KeyError(path)
        if path:
            self._writer.directory(path)
        return self.dest / path

    def fetch(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Write ``paths`` (those not written yet) and return the bytes of each asked path that
        is a file of the commit (a symlink's: its target)."""
        asked = [p for p in dict.fromkeys(paths) if p in self.entries]
        new = [self.entries[p] for p in asked if p not in self.written]
        new = [e for e in new if e.kind == "blob"]
        if new:
            with self.scratch() as ctx, self._mirror(ctx) as (mirror, auth):
                paths = [e.path for e in new]
                missing = mirror.missing_at(self.version, paths)
                mirror.fetch_objects(self.version, missing, auth, paths=paths)
                write_blobs(mirror.path, new, self.dest, source=self.repo.url, writer=self._writer)
            self.written.update(e.path for e in new)
        found: dict[str, bytes] = {}
        for path in asked:
            target = self.dest / path
            if self.entries[path].mode == SYMLINK:
                found[path] = os.fsencode(os.readlink(target))
            elif self.entries[path].kind == "blob":
                found[path] = target.read_bytes()
        return found

    @contextmanager
    def _mirror(self, ctx: FetchContext) -> Iterator[tuple[Mirror, AuthSession]]:
        """The repository's mirror in the scratch directory, opened, and a session for it."""
        if ctx.scratch is None:
            raise SourceError("a partial git checkout needs the cache's scratch directory")
        mirror = self.repo._mirror(self.repo.url, ctx.scratch, 0, self.version)
        with self.repo._session(ctx) as auth, mirror.opened():
            yield mirror, auth
