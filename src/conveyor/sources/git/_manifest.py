"""What a commit's checkout must hold, and checking a directory against it.

A `GitManifest` (path → mode, blob id) is what `verify_git_tree` compares the directory against,
hashing each file as git does (``blob <size>\\0<bytes>``): a missing, extra or changed file, a
wrong executable bit or symlink target is an `IntegrityError` naming the first differing path.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import IntegrityError
from conveyor.sources.git._checkout import _EXEC, GITLINK, SYMLINK, TreeEntry, _blob_id

if TYPE_CHECKING:
    from conveyor._tree import Known

__all__ = ["GitManifest", "GitTreeEntry", "manifest_of", "verify_git_tree"]


@dataclass(frozen=True)
class GitTreeEntry:
    """What one path in a checkout must be: mode, blob id, and the hash that names it."""

    path: str
    mode: str
    oid: str
    algorithm: str = "sha1"


GitManifest = tuple[GitTreeEntry, ...]


def manifest_of(
    entries: Iterable[TreeEntry], *, prefix: str = "", algorithm: str = "sha1"
) -> list[GitTreeEntry]:
    """The manifest of written entries (gitlinks as empty directories, mode 160000)."""
    return [
        GitTreeEntry(prefix + e.path, e.mode, e.oid, algorithm)
        for e in entries
        if e.kind == "blob" or e.mode == GITLINK
    ]


def _file_id(path: Path, size: int, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    digest.update(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _on_disk(root: Path) -> tuple[set[str], set[str]]:
    files: set[str] = set()
    dirs: set[str] = set()
    for top, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(top, root)
        base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in list(dirnames):
            if os.path.islink(os.path.join(top, d)):
                files.add(base + d)
                dirnames.remove(d)
            else:
                dirs.add(base + d)
        files.update(base + f for f in filenames)
    return files, dirs


def verify_git_tree(
    root: Path, manifest: GitManifest, *, version: str, known: Known | None = None
) -> None:
    """Raise `IntegrityError` unless ``root`` holds exactly ``manifest`` (``known``: files whose
    blob ids were computed as they were written, not read again)."""
    files, dirs = _on_disk(root)
    expected = {e.path for e in manifest if e.mode != GITLINK}
    for entry in sorted(manifest, key=lambda e: e.path):
        path = root / entry.path
        where = f"{entry.path!r} in the checkout of {version}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise IntegrityError(f"{where} is missing", path=entry.path) from None
        if entry.mode == GITLINK:
            if not stat.S_ISDIR(st.st_mode):
                raise IntegrityError(f"{where} is not a directory", path=entry.path)
            continue
        if entry.mode == SYMLINK:
            if not stat.S_ISLNK(st.st_mode):
                raise IntegrityError(f"{where} is not a symlink", path=entry.path)
            actual = _blob_id(os.fsencode(os.readlink(path)), entry.algorithm)
        else:
            if not stat.S_ISREG(st.st_mode):
                raise IntegrityError(f"{where} is not a regular file", path=entry.path)
            if bool(st.st_mode & stat.S_IXUSR) != (entry.mode == _EXEC):
                raise IntegrityError(f"{where} has the wrong executable bit", path=entry.path)
            digests = known(os.fspath(path), st) if known is not None else None
            actual = (digests or {}).get(f"git-{entry.algorithm}") or _file_id(
                path, st.st_size, entry.algorithm
            )
        if actual != entry.oid:
            raise IntegrityError(f"{where} does not match commit {version}", path=entry.path)
    extra = sorted(files - expected)
    if extra:
        raise IntegrityError(
            f"{extra[0]!r} in the checkout of {version} is not in the commit", path=extra[0]
        )
    if ".git" in dirs or ".git" in files:
        raise IntegrityError(f"the checkout of {version} holds a .git", path=".git")
