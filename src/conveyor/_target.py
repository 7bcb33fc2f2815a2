"""An empty directory being filled with a tree, safely, with nothing left behind on failure.

Used by `conveyor.bundles.unpack` and `conveyor.bundles.lay_out_tree`. Files are created with
``O_EXCL | O_NOFOLLOW`` under directories this object made itself; symlinks are created only at the
end (so no file is ever written through a link) and each must then resolve inside the tree. On any
error, everything written is removed: a destination that existed (empty) is emptied again, and a
destination that did not exist never appears (the tree is built in a temporary sibling and renamed
into place).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from conveyor.errors import BundleError, UnsafeArchive

if TYPE_CHECKING:
    from conveyor._manifest import ManifestEntry
    from conveyor._objects import Fill

__all__ = ["Target"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MODES = {(False, False): 0o644, (False, True): 0o755, (True, False): 0o444, (True, True): 0o555}
"""(sealed, executable) → the mode a new file gets."""


def _conflict(rel: str) -> UnsafeArchive:
    return UnsafeArchive(f"refusing archive member {rel!r}: it conflicts with another member")


class Target:
    """Context manager: ``with Target(dest) as t: t.write_file(...); t.add_link(...)``."""

    def __init__(self, dest: Path, *, sealed: bool = False) -> None:
        self.dest = Path(dest)
        self.sealed = sealed
        """Create files read-only (``0o444``/``0o555``), as the code cache keeps them."""
        self.work = ""
        self._temporary = False
        self._dirs: set[str] = {""}
        self._links: list[tuple[str, str]] = []
        self.files: set[str] = set()

    def __enter__(self) -> Target:
        dest = self.dest
        if os.path.lexists(dest):
            if not dest.is_dir():
                raise BundleError(f"{dest} exists and is not a directory")
            with os.scandir(dest) as it:
                if next(it, None) is not None:
                    raise BundleError(
                        f"{dest} is not empty", hint="unpack into a new or empty directory"
                    )
            self.work = os.fspath(dest)
        else:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.work = tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)
                os.chmod(self.work, 0o755)  # noqa: S103 - a checkout is readable code
            except OSError as exc:
                raise BundleError(f"cannot create {dest}: {exc.strerror}") from None
            self._temporary = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._clean()
            return
        if self._temporary:
            try:
                os.rename(self.work, self.dest)
            except OSError as error:
                self._clean()
                raise BundleError(f"cannot move the tree into {self.dest}: {error}") from None

    def _clean(self) -> None:
        if self._temporary:
            shutil.rmtree(self.work, ignore_errors=True)
            return
        with os.scandir(self.work) as it:
            for child in it:
                if child.is_dir(follow_symlinks=False):
                    shutil.rmtree(child.path, ignore_errors=True)
                else:
                    os.unlink(child.path)

    def _parent(self, rel: str) -> None:
        parent = posixpath.dirname(rel)
        if parent in self._dirs:
            return
        try:
            os.makedirs(os.path.join(self.work, parent), mode=0o755, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise _conflict(rel) from None
        except OSError as exc:
            raise BundleError(f"cannot create {parent}: {exc.strerror}") from None
        while parent and parent not in self._dirs:
            self._dirs.add(parent)
            parent = posixpath.dirname(parent)

    def make_dir(self, rel: str) -> None:
        """Create directory ``rel`` (and its parents)."""
        self._parent(rel + "/x")

    def write_file(
        self, rel: str, chunks: Iterable[bytes | memoryview], *, executable: bool
    ) -> tuple[str, int]:
        """Create file ``rel`` from ``chunks``; return (sha256 hex, size) of what was written."""
        self.claim(rel)
        digest, size, _st = self.write_new(rel, chunks, executable=executable)
        return digest, size

    def claim(self, rel: str) -> None:
        """Make file ``rel``'s directory (before `write_new`, on the thread that owns this)."""
        self._parent(rel)
        self.files.add(rel)

    def write_new(
        self, rel: str, chunks: Iterable[bytes | memoryview], *, executable: bool
    ) -> tuple[str, int, os.stat_result]:
        """Create file ``rel`` (claimed) from ``chunks``: its sha256 hex, size and stat after
        writing. Safe to call from several threads for different files."""
        full = os.path.join(self.work, rel)
        mode = _MODES[self.sealed, executable]
        try:
            fd = os.open(full, _FLAGS, mode)
        except (FileExistsError, IsADirectoryError):
            raise _conflict(rel) from None
        except OSError as exc:
            raise BundleError(f"cannot write {rel}: {exc.strerror}") from None
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in chunks:
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(chunk)
            st = os.fstat(fd)
        except OSError as exc:
            raise BundleError(f"cannot write {rel}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return digest.hexdigest(), size, st

    def link_object(self, rel: str, objects: Fill, entry: ManifestEntry) -> bool:
        """Create file ``rel`` as a link to the stored object of ``entry``'s bytes; False when
        the store has none (write it then)."""
        self._parent(rel)
        full = os.path.join(self.work, rel)
        if not objects.link(full, entry.sha256, entry.executable):
            return False
        self.files.add(rel)
        return True

    def wrote(self, rel: str, objects: Fill, sha256: str, st: os.stat_result | None = None) -> None:
        """Tell ``objects`` the digest of file ``rel``, just written (``st``: its stat then);
        a sealed target's file is stored right away."""
        full = os.path.join(self.work, rel)
        objects.wrote(full, st or os.lstat(full), {"sha256": sha256}, store=self.sealed)

    def read_written(self, rel: str) -> Iterable[bytes]:
        """The content of a file this target already wrote (to copy a hardlink)."""
        with open(os.path.join(self.work, rel), "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    def add_link(self, rel: str, target: str) -> None:
        """Remember symlink ``rel -> target``; it is created by `create_links`, after all files."""
        if not target or "\x00" in target:
            raise UnsafeArchive(f"refusing archive member {rel!r}: symlink with an empty target")
        if posixpath.isabs(target):
            raise UnsafeArchive(f"refusing archive member {rel!r}: symlink to an absolute path")
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if lexical == ".." or lexical.startswith("../"):
            raise UnsafeArchive(
                f"refusing archive member {rel!r}: symlink -> {target} leaves the tree"
            )
        self._links.append((rel, target))

    def create_links(self) -> None:
        """Create the remembered symlinks, then check that each resolves inside the tree."""
        for rel, target in self._links:
            self._parent(rel)
            try:
                os.symlink(target, os.path.join(self.work, rel))
            except FileExistsError:
                raise _conflict(rel) from None
        top = os.path.realpath(self.work)
        for rel, target in self._links:
            real = os.path.realpath(os.path.join(self.work, rel))
            if real != top and not real.startswith(top + os.sep):
                raise UnsafeArchive(
                    f"refusing archive member {rel!r}: symlink -> {target} leaves the tree"
                )
