"""Materialise one commit's tree from a mirror into a directory.

`list_tree` reads the commit's entries (``git ls-tree -r -t -z``, remembered per commit),
`select` keeps those a ``directories`` list asks for (git's cone mode: the listed directories,
recursively, plus the files at the top level), `link_stored` links the blobs the cache's object
store holds, and `write_blobs` streams the others out of one ``git cat-file --batch`` (lazy
fetches disabled: the caller fetched them first) into files with git's modes. Nothing of git is
left in the destination: no ``.git``, no index.

Paths and symlinks are checked as for an archive: no ``..``, no ``.git`` component, no absolute
path, no entry below a symlink, no symlink pointing outside the tree (`UnsafeArchive`).

What the checkout must hold, and checking a directory against it afterwards, is in
`conveyor.sources.git._manifest`.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from conveyor._process import run
from conveyor.errors import IntegrityError, SourceError, UnsafeArchive, VersionNotFound
from conveyor.secrets import reveal
from conveyor.sources.git._cmd import OFFLINE, git_environment

if TYPE_CHECKING:
    from conveyor._objects import Fill

__all__ = [
    "GITLINK",
    "SYMLINK",
    "TreeEntry",
    "TreeWriter",
    "link_stored",
    "list_tree",
    "select",
    "tree_ids",
    "write_blobs",
]

SYMLINK = "120000"
GITLINK = "160000"
_EXEC = "100755"
_FILE_MODES = {"100644", _EXEC}


class TreeEntry(NamedTuple):
    """One ``ls-tree -r`` entry of a commit."""

    mode: str
    kind: str
    oid: str
    path: str


def _check_path(path: str) -> None:
    parts = path.split("/")
    if (
        "" in parts  # empty, absolute, or a doubled or trailing slash
        or "." in parts
        or ".." in parts
        or "\\" in path
        or "\0" in path
        or (".git" in path.lower() and any(p.lower() == ".git" for p in parts))
    ):
        raise UnsafeArchive(f"git tree entry {path!r} is not a safe relative path")


def _local_git(git_dir: Path, *args: str) -> bytes:
    """A local, read-only git command in ``git_dir`` (lazy fetches off); raw stdout bytes."""
    done = run(
        ["git", "--git-dir", str(git_dir), *OFFLINE, *args],
        env=git_environment(),
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()
        raise SourceError(f"git {args[0]} failed: {err[-1] if err else done.returncode}")
    return done.stdout_bytes


_LISTED: dict[tuple[str, str], tuple[list[TreeEntry], dict[str, str]]] = {}
"""The last few commits listed in this process, by (mirror, commit): a commit's tree never
changes, and a fill lists it to write it and again to collect its proof."""


def _listing(git_dir: Path, sha: str) -> tuple[list[TreeEntry], dict[str, str]]:
    """Commit ``sha``'s file, symlink and submodule entries, and its trees' ids by path."""
    key = (os.fspath(git_dir), sha)
    found = _LISTED.get(key)
    if found is not None:
        return found
    out = _local_git(git_dir, "ls-tree", "-r", "-t", "-z", "--full-tree", sha)
    entries: list[TreeEntry] = []
    trees: dict[str, str] = {}
    # Decoded once, as `os.fsdecode` decodes each path (paths that are not UTF-8 survive).
    text = out.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    for record in text.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, oid = meta.split()
        _check_path(path)
        if kind == "tree":
            trees[path] = oid
        else:
            entries.append(TreeEntry(mode, kind, oid, path))
    if len(_LISTED) >= 4:
        _LISTED.pop(next(iter(_LISTED)))
    _LISTED[key] = (entries, trees)
    return entries, trees


def list_tree(git_dir: Path, sha: str) -> list[TreeEntry]:
    """Every file, symlink and submodule entry of commit ``sha`` (no network)."""
    return list(_listing(git_dir, sha)[0])


def tree_ids(git_dir: Path, sha: str, entries: Iterable[TreeEntry]) -> list[str]:
    """The ids of commit ``sha``'s root tree and of every tree above one of ``entries``."""
    wanted: set[str] = set()
    for entry in entries:
        parent = entry.path.rpartition("/")[0]
        while parent and parent not in wanted:
            wanted.add(parent)
            parent = parent.rpartition("/")[0]
    trees = _listing(git_dir, sha)[1] if wanted else {}
    return [f"{sha}^{{tree}}", *(oid for path, oid in trees.items() if path in wanted)]


def select(
    entries: Sequence[TreeEntry], directories: Sequence[str] | None, *, sha: str, source: str
) -> list[TreeEntry]:
    """The entries a sparse checkout of ``directories`` holds (all of them when None)."""
    if not directories:
        return list(entries)
    chosen = []
    found = dict.fromkeys(directories, False)
    for entry in entries:
        if "/" not in entry.path:
            chosen.append(entry)
        for d in directories:
            if entry.path == d or entry.path.startswith(d + "/"):
                found[d] = True
                if "/" in entry.path:
                    chosen.append(entry)
                break
    absent = [d for d, ok in found.items() if not ok]
    if absent:
        raise VersionNotFound(
            f"commit {sha} of {source} has no directory {absent[0]!r}", source=source
        )
    return chosen


def _safe_link(path: str, target: bytes) -> None:
    text = target.decode("utf-8", errors="surrogateescape")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), text))
    if text.startswith("/") or joined == ".." or joined.startswith("../") or "\0" in text:
        raise UnsafeArchive(f"symlink {path!r} points outside the tree ({text!r})")


class TreeWriter:
    """Writes entries below ``dest`` refusing anything below a symlink; with ``objects`` (the
    cache's fill), links blobs the store holds (their sha256 known by blob id from earlier
    checkouts, the object checked intact), checks each blob it writes against its id
    (`IntegrityError`) and reports the digests of what it writes: so what it wrote is
    verified, and the fill can vouch for it (`Fill.vouches`)."""

    def __init__(self, dest: Path, objects: Fill | None = None, algorithm: str = "sha1") -> None:
        self.dest = dest
        self.links: set[str] = set()
        self.dirs: set[str] = {""}
        self.objects = objects
        self.alias = f"git-{algorithm}"
        self.algorithm = algorithm

    def _parent(self, path: str) -> Path:
        parent = posixpath.dirname(path)
        missing = []
        probe = parent
        while probe not in self.dirs:
            if probe in self.links:
                raise UnsafeArchive(f"git tree entry {path!r} is below a symlink")
            missing.append(probe)
            probe = posixpath.dirname(probe)
        for d in reversed(missing):
            os.mkdir(self.dest / d)
            self.dirs.add(d)
        return self.dest / parent

    def link_all(self, found: Sequence[tuple[TreeEntry, str]]) -> list[TreeEntry]:
        """Link the stored objects of ``found`` (blob entries with their content's sha256),
        making each directory once; returns the entries not linked (write them)."""
        assert self.objects is not None
        top = os.fspath(self.dest)
        dirs, links, alias = self.dirs, self.links, self.alias
        paths = {entry.path for entry, _sha in found}
        new: set[str] = set()
        items: list[tuple[str, str, bool, dict[str, str]]] = []
        for entry, sha256 in found:
            path = entry.path
            if path in dirs or path in links:
                raise UnsafeArchive(f"git tree entry {path!r} appears twice")
            probe = path.rpartition("/")[0]
            while probe not in dirs and probe not in new:
                if probe in links or probe in paths:
                    raise UnsafeArchive(f"git tree entry {path!r} is below a file or symlink")
                new.add(probe)
                probe = probe.rpartition("/")[0]
            digests = {"sha256": sha256, alias: entry.oid}
            items.append((f"{top}/{path}", sha256, entry.mode == _EXEC, digests))
        for d in sorted(new):  # parents first
            os.mkdir(f"{top}/{d}")
            dirs.add(d)
        linked = self.objects.link_all(items)
        return [entry for (entry, _sha), done in zip(found, linked, strict=True) if not done]

    def file(self, entry: TreeEntry, data: bytes) -> None:
        if entry.path in self.dirs or entry.path in self.links:
            raise UnsafeArchive(f"git tree entry {entry.path!r} appears twice")
        self._parent(entry.path)
        target = self.dest / entry.path
        blob_id = _blob_id(data, self.algorithm) if self.objects is not None else None
        if blob_id is not None and blob_id != entry.oid:  # vouched for: checked as written
            raise IntegrityError(
                f"{entry.path!r} read from the mirror does not hash to its blob id {entry.oid}",
                path=entry.path,
            )
        if entry.mode == SYMLINK:
            _safe_link(entry.path, data)
            os.symlink(data, target)
            self.links.add(entry.path)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o755 if entry.mode == _EXEC else 0o644)
            if self.objects is not None and blob_id is not None:
                digests = {"sha256": hashlib.sha256(data).hexdigest(), self.alias: blob_id}
                self.objects.wrote(target, os.fstat(fd), digests)
        finally:
            os.close(fd)

    def directory(self, path: str) -> None:
        self._parent(path)
        if path not in self.dirs:
            os.mkdir(self.dest / path)
            self.dirs.add(path)


def write_blobs(
    git_dir: Path,
    entries: Sequence[TreeEntry],
    dest: Path,
    *,
    source: str,
    writer: TreeWriter | None = None,
    objects: Fill | None = None,
    algorithm: str = "sha1",
) -> None:
    """Write ``entries`` (their blobs already in the mirror) into ``dest``; gitlinks as empty
    directories (submodules are filled by the caller). A ``writer`` of ``dest`` carries what
    earlier calls wrote (a checkout written in rounds). With ``objects`` (the cache's fill), a
    blob whose bytes an earlier checkout stored is linked, not read from git."""
    writer = writer if writer is not None else TreeWriter(dest, objects, algorithm)
    blobs = link_stored(entries, writer) if objects is not None else _layout(entries, writer)
    if not blobs:
        return
    env = {k: reveal(v) for k, v in git_environment().items()}
    proc = subprocess.Popen(
        [
            "git",
            "--git-dir",
            str(git_dir),
            *OFFLINE,
            "cat-file",
            "--batch",
            "--buffer",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    request = "".join(f"{e.oid}\n" for e in blobs).encode()

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(request)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        for entry in blobs:
            header = proc.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                raise SourceError(
                    f"file {entry.path!r} ({entry.oid}) is missing from the mirror of {source}",
                    source=source,
                )
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)
            if len(data) != size:
                raise SourceError(f"git cat-file ended early at {entry.path!r}", source=source)
            writer.file(entry, data)
    finally:
        feeder.join(timeout=60)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait(timeout=60)
    if code != 0:
        raise SourceError(
            f"git cat-file failed for {source}: {err.decode(errors='replace').strip()[-200:]}",
            source=source,
        )


def link_stored(entries: Sequence[TreeEntry], writer: TreeWriter) -> list[TreeEntry]:
    """The first half of `write_blobs` with the cache's fill (``writer.objects``): gitlinks as
    empty directories, and the blobs an earlier checkout stored linked (known by their ids);
    returns the blobs left to write (only those need be in the mirror)."""
    assert writer.objects is not None
    made = writer.objects.premade(os.fspath(writer.dest))
    if made is not None:
        writer.dirs |= made.settle(_directories(entries))
    return _link_stored(writer, writer.objects, _layout(entries, writer))


def _layout(entries: Sequence[TreeEntry], writer: TreeWriter) -> list[TreeEntry]:
    """Check the entries' modes and make the gitlinks' directories; the blob entries."""
    for entry in entries:
        if entry.mode == GITLINK:
            writer.directory(entry.path)
        elif entry.kind != "blob" or entry.mode not in (*_FILE_MODES, SYMLINK):
            raise UnsafeArchive(f"git tree entry {entry.path!r} has unsupported mode {entry.mode}")
    return [e for e in entries if e.kind == "blob"]


def _directories(entries: Iterable[TreeEntry]) -> set[str]:
    """Every directory a checkout of ``entries`` has (gitlinks are empty directories)."""
    found: set[str] = set()
    for entry in entries:
        if entry.mode == GITLINK:
            found.add(entry.path)
        parent = entry.path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


def _link_stored(writer: TreeWriter, objects: Fill, blobs: list[TreeEntry]) -> list[TreeEntry]:
    """Link the blobs the store holds (known by their ids from earlier checkouts); the rest."""
    found: list[tuple[TreeEntry, str]] = []
    rest: list[TreeEntry] = []
    known = objects.lookup_all(writer.alias, [e.oid for e in blobs])
    for entry, sha in zip(blobs, known, strict=True):
        if sha and entry.mode != SYMLINK:
            found.append((entry, sha))
        else:
            rest.append(entry)
    left = {id(e) for e in (*writer.link_all(found), *rest)}
    return [e for e in blobs if id(e) in left]


def _blob_id(data: bytes, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    digest.update(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()
