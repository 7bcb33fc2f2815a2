"""The evidence that authenticates a commit's checkout without the mirror: its own git objects.

A commit id is the hash of the commit object, which names its root tree by hash, which names
every subtree and blob by hash. So the raw commit and tree objects are a proof of what a
checkout of the commit holds: `collect` takes them from the mirror right after a fetch verified
(``git cat-file --batch`` output, verbatim: ``<oid> <type> <size>\\n<bytes>\\n`` per object, the
commit's and, for submodules, theirs), and `expected_tree` re-hashes every object, walks from the
commit to the files the checkout has (the same ``directories`` selection as the fetch, submodules
below their gitlinks) and returns each path's blob id and mode. A tampered object no longer hashes
to the id its parent names, so the cache can keep the proof beside the checkout untrusted.

Only the trees on the way to the selected entries are collected (a sparse checkout of a monorepo
does not carry every tree of the repository). The entries below each tree walked are remembered
by the tree's id (its bytes checked first, as every object's are), so the walk of a new commit
parses only the trees it changed; a proof must still hold every tree it names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from conveyor._expected import Algorithm, ExpectedEntry, ExpectedTree
from conveyor._process import run
from conveyor.errors import IntegrityError, SourceError, UnsafeArchive, VersionNotFound
from conveyor.sources.git._checkout import (
    GITLINK,
    SYMLINK,
    TreeEntry,
    _check_path,
    select,
    tree_ids,
)
from conveyor.sources.git._cmd import OFFLINE, git_environment

__all__ = ["collect", "expected_tree", "tree_ids"]

_TREE = "40000"
_EXEC = "100755"
_FILE = "100644"
_MAX_DEPTH = 8


def collect(git_dir: Path, names: Sequence[str]) -> bytes:
    """The raw objects ``names`` (``cat-file --batch`` output) from the mirror at ``git_dir``."""
    out = _git(git_dir, ["cat-file", "--batch"], input="".join(f"{n}\n" for n in names).encode())
    for header, _body in _records(out, names[0]):
        if len(header) != 3:
            name = header[0].decode(errors="replace") if header else "?"
            raise SourceError(f"git object {name} is missing from the mirror")
    return out


def _records(data: bytes, version: str) -> Iterator[tuple[list[bytes], bytes]]:
    """``(header fields, body)`` of each record of ``cat-file --batch`` output."""
    at = 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            raise IntegrityError(f"the git objects kept for commit {version} are truncated")
        header = data[at:end].split()
        if len(header) != 3:  # "<name> missing" (or garbage): no body follows
            yield header, b""
            at = end + 1
            continue
        if not header[2].isdigit():
            raise IntegrityError(f"the git objects kept for commit {version} are malformed")
        size = int(header[2])
        body = data[end + 1 : end + 1 + size]
        if len(body) != size:
            raise IntegrityError(f"the git objects kept for commit {version} are truncated")
        yield header, body
        at = end + 2 + size


def _git(git_dir: Path, args: list[str], *, input: bytes | None = None) -> bytes:
    done = run(
        ["git", "--git-dir", str(git_dir), *OFFLINE, *args],
        env=git_environment(),
        input=input,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise SourceError(f"git {args[0]} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout_bytes


def _objects(proof: bytes, version: str) -> dict[str, tuple[str, bytes]]:
    """Every object of ``proof`` by id, each re-hashed (`IntegrityError` for one that is not)."""
    found: dict[str, tuple[str, bytes]] = {}
    for header, body in _records(proof, version):
        if len(header) != 3 or len(header[0]) not in (40, 64):
            raise IntegrityError(f"the git objects kept for commit {version} are malformed")
        oid, kind = header[0].decode(), header[1].decode()
        hasher = hashlib.sha1() if len(oid) == 40 else hashlib.sha256()  # noqa: S324 - git's id
        hasher.update(b"%s %d\0" % (header[1], len(body)))
        hasher.update(body)
        if hasher.hexdigest() != oid:
            raise IntegrityError(
                f"git object {oid} kept for commit {version} does not hash to its id"
            )
        found[oid] = (kind, body)
    return found


_TREES: dict[tuple[str, str, tuple[str, ...] | None], tuple[TreeEntry, ...]] = {}
"""The entries below trees this process walked, by (tree id, path, directories): a tree's id
is the hash of its bytes (checked by `_objects` before any walk), so a new commit that shares
most of its trees with the last one parses only the trees it changed."""
_TREES_HELD = 0
_MAX_TREES_HELD = 1_000_000
"""Entries `_TREES` may hold (counted once per tree above them); beyond, it starts over."""


class _Walk:
    def __init__(self, objects: dict[str, tuple[str, bytes]], version: str) -> None:
        self.objects = objects
        self.version = version

    def get(self, oid: str, kind: str) -> bytes:
        found = self.objects.get(oid)
        if found is None or found[0] != kind:
            raise IntegrityError(
                f"the git objects kept for commit {self.version} lack {kind} {oid}",
                hint="the checkout is fetched again once",
            )
        return found[1]

    def commit(
        self,
        sha: str,
        prefix: str,
        directories: Sequence[str] | None,
        submodules: bool,
        depth: int,
    ) -> list[ExpectedEntry]:
        body = self.get(sha, "commit")
        first = body.split(b"\n", 1)[0].split()
        if len(first) != 2 or first[0] != b"tree":
            raise IntegrityError(f"commit {sha} has no tree")
        listed = self.tree(first[1].decode(), "", directories)
        try:
            chosen = select(listed, directories, sha=sha, source=self.version)
        except VersionNotFound as exc:
            raise IntegrityError(str(exc)) from None
        algorithm: Algorithm = "git-sha1" if len(sha) == 40 else "git-sha256"
        out: list[ExpectedEntry] = []
        for entry in chosen:
            path = prefix + entry.path
            if entry.mode == GITLINK:
                out.append(ExpectedEntry(path, "dir"))
                if submodules:
                    if depth + 1 > _MAX_DEPTH:
                        raise IntegrityError(f"submodules of commit {self.version} nest too deep")
                    out += self.commit(entry.oid, path + "/", None, True, depth + 1)
            elif entry.mode == SYMLINK:
                out.append(ExpectedEntry(path, "link", entry.oid, algorithm))
            elif entry.mode in (_FILE, _EXEC):
                out.append(ExpectedEntry(path, "file", entry.oid, algorithm, entry.mode == _EXEC))
            else:
                raise UnsafeArchive(f"git tree entry {path!r} has unsupported mode {entry.mode}")
        return out

    def tree(self, oid: str, prefix: str, directories: Sequence[str] | None) -> list[TreeEntry]:
        key = (oid, prefix, tuple(directories) if directories else None)
        known = _TREES.get(key)
        if known is not None and self.objects.get(oid, ("",))[0] == "tree":  # still in the proof
            return list(known)
        entries = self._tree(oid, prefix, directories)
        global _TREES_HELD
        if _TREES_HELD + len(entries) > _MAX_TREES_HELD:
            _TREES.clear()
            _TREES_HELD = 0
        _TREES[key] = tuple(entries)
        _TREES_HELD += len(entries)
        return entries

    def _tree(self, oid: str, prefix: str, directories: Sequence[str] | None) -> list[TreeEntry]:
        body = self.get(oid, "tree")
        size = 20 if len(oid) == 40 else 32
        entries: list[TreeEntry] = []
        at = 0
        while at < len(body):
            space = body.index(b" ", at)
            nul = body.index(b"\0", space)
            mode = body[at:space].decode()
            name = body[space + 1 : nul].decode("utf-8", "surrogateescape")
            child = body[nul + 1 : nul + 1 + size].hex()
            at = nul + 1 + size
            path = prefix + name
            _check_path(path)
            if mode == _TREE:
                if _needed(path, directories):
                    entries += self.tree(child, path + "/", directories)
            else:
                kind = "commit" if mode == GITLINK else "blob"
                entries.append(TreeEntry(mode.zfill(6), kind, child, path))
        return entries


def _needed(path: str, directories: Sequence[str] | None) -> bool:
    """Whether the tree at ``path`` holds (or leads to) entries a sparse checkout selects."""
    if not directories:
        return True
    return any(
        d == path or d.startswith(path + "/") or path.startswith(d + "/") for d in directories
    )


def expected_tree(
    version: str,
    proof: bytes | None,
    *,
    directories: Sequence[str] | None,
    submodules: bool,
) -> ExpectedTree:
    """The files of commit ``version``'s checkout with their blob ids, from ``proof`` alone."""
    if not proof:
        raise IntegrityError(
            f"no git objects are kept with the checkout of commit {version}",
            hint="the checkout is fetched again once (a cache filled by an older Conveyor)",
        )
    walk = _Walk(_objects(proof, version), version)
    entries = walk.commit(version, "", directories, submodules, 0)
    return ExpectedTree(version, tuple(sorted(entries, key=lambda e: e.path)))
