"""A checkout's index: which object each path links, recorded when the checkout is sealed, and
the cheap check made on every use.

``<key>/.index/<version>`` (JSON, read-only) lists every file of the checkout with the object it
links (``<sha256>`` or ``<sha256>.x``) and the other digest the version names it by (a git blob
id, ``git-sha1:<hex>``), every symlink with its target, and every directory.

`seal` turns a fetched tree into a checkout: each file becomes a link to its object (hashed
unless the fill already knows its digest), directories become read-only, and the index is
returned. `conveyor._cachecheck.check` is what every use costs: the stat of each file against
its object's recorded `Stamp`. `agrees` ties the index to the version: every path, mode and digest
of the `ExpectedTree` the source rebuilds from the version's own evidence must be the index's, so
neither can be changed without the other failing.

Mismatches raise `IntegrityError` naming the first path; the cache then fetches the version
again (see `conveyor._verified`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._expected import digest
from conveyor._objects import ObjectStore, hash_file, object_name
from conveyor._stamps import Stamp
from conveyor.errors import CacheError, IntegrityError

if TYPE_CHECKING:
    from conveyor._expected import ExpectedTree
    from conveyor._objects import Fill

__all__ = [
    "Index",
    "agrees",
    "index_path",
    "mismatch",
    "read_index",
    "release",
    "seal",
    "write_index",
]

_FORMAT = 1
_READ_ONLY_DIR = 0o555
_FILE = stat.S_IFREG
_HINT = (
    "the cached checkout was modified after it was verified; it is fetched again once — if this "
    "persists, the version's source itself no longer holds these bytes"
)


@dataclass(frozen=True)
class Index:
    """Path → (object name, alias) for files; path → target for symlinks; directories."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: frozenset[str] = frozenset()
    size: int = 0
    """Bytes of file content (as if nothing were shared)."""

    def to_bytes(self) -> bytes:
        data = {
            "format": _FORMAT,
            "files": [[p, n, a] for p, (n, a) in sorted(self.files.items())],  # paths unique
            "links": [[p, t] for p, t in sorted(self.links.items())],
            "dirs": sorted(self.dirs),
            "size": self.size,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ValueError("unknown index format")
        return cls(
            files={str(p): (str(n), str(a)) for p, n, a in raw["files"]},
            links={str(p): str(t) for p, t in raw["links"]},
            dirs=frozenset(str(d) for d in raw["dirs"]),
            size=int(raw["size"]),
        )

    def aliases(self) -> dict[str, str]:
        """``algorithm:digest`` → sha256 for the files that have another digest."""
        return {a: n[:64] for n, a in self.files.values() if a}


def index_path(checkout: Path) -> Path:
    """``<key>/.index/<version>``."""
    return checkout.parent / ".index" / checkout.name


_READ: dict[str, tuple[Stamp, Index]] = {}
"""Indexes this process read lately, with the stamp of their file (a few: they are large)."""


def read_index(checkout: Path) -> Index | None:
    """The checkout's index, or None when it is missing or unreadable (remembered while its
    file is unchanged: the same stamp)."""
    path = index_path(checkout)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stamp = Stamp.of(os.fstat(fd))
        cached = _READ.get(os.fspath(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with os.fdopen(os.dup(fd), "rb") as fh:
            index = Index.from_bytes(fh.read())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
    _remember(os.fspath(path), stamp, index)
    return index


def _remember(path: str, stamp: Stamp, index: Index) -> None:
    if len(_READ) >= 16:
        _READ.pop(next(iter(_READ)))
    _READ[path] = (stamp, index)


def write_index(checkout: Path, index: Index, *, tmp: Path) -> None:
    """Keep ``index`` for ``checkout`` (under its fill lock), read-only."""
    from conveyor._fs import atomic_write

    path = index_path(checkout)
    path.parent.mkdir(exist_ok=True)
    with atomic_write(path, tmp=tmp, mode=0o444) as out:
        out.write(index.to_bytes())
    _remember(os.fspath(path), Stamp.of(os.lstat(path)), index)


# -- sealing a fetched tree --------------------------------------------------------------------


def seal(root: Path, fill: Fill) -> Index:
    """Turn the fetched tree at ``root`` into a checkout: every file a link to its object,
    directories read-only. Returns its index (aliases are what the fill learnt).

    Files the fill linked or stored, unchanged since (their stat is the one it took right after
    its last link of the object), are only listed; files it wrote and knows the digests of are
    stored; the rest are hashed first (two threads: hashing releases the GIL), among them a file
    linked by the fill that changed since (an alias is kept only when the bytes are still those
    the fill linked)."""
    found: list[tuple[str, str, os.stat_result]] = []
    links: dict[str, str] = {}
    dirs: list[str] = []
    top = os.fspath(root)
    stack = [""]
    while stack:
        prefix = stack.pop()
        with os.scandir(os.path.join(top, prefix) if prefix else top) as it:
            children = list(it)
        for child in children:
            rel = prefix + child.name
            if child.is_dir(follow_symlinks=False):  # the kind from the listing: no stat
                dirs.append(rel)
                stack.append(rel + "/")
                continue
            st = child.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                found.append((rel, child.path, st))
            elif stat.S_ISLNK(st.st_mode):
                links[rel] = os.readlink(child.path)
            else:
                raise CacheError(f"a fetch left {rel}, which is not a file, link or directory")
    files, rest = fill.settled(found)
    digests = _digests(fill, rest)
    for rel, path, st in rest:
        sha, alias = digests[rel]
        name = fill.adopted(path, st)
        if name is None or name[:64] != sha:
            name = fill.adopt(path, sha, bool(st.st_mode & stat.S_IXUSR), st)
        files[rel] = (name, alias)
    fill.finish()
    for rel in sorted(dirs, key=len, reverse=True):
        os.chmod(os.path.join(top, rel), _READ_ONLY_DIR)
    os.chmod(top, _READ_ONLY_DIR)
    return Index(files, links, frozenset(dirs), sum(st.st_size for _r, _p, st in found))


def _digests(
    fill: Fill, found: list[tuple[str, str, os.stat_result]]
) -> dict[str, tuple[str, str]]:
    """rel → (sha256, alias) of each file: known to the fill, or hashed now."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, tuple[str, str]] = {}
    unknown: list[tuple[str, str]] = []
    for rel, path, st in found:
        known = fill.known(path, st) if fill.adopted(path, st) is None else None
        if known and "sha256" in known:
            out[rel] = (known["sha256"], fill.alias(path))
        else:
            unknown.append((rel, path))
    if len(unknown) < 16:
        hashed: Iterable[str] = [hash_file(path)[0] for _rel, path in unknown]
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:
            hashed = list(pool.map(lambda item: hash_file(item[1])[0], unknown))
    for (rel, path), sha in zip(unknown, hashed, strict=True):
        recorded = fill.recorded(path)
        same = recorded is not None and recorded.get("sha256") == sha
        out[rel] = (sha, fill.alias(path) if same else "")
    return out


# -- every use ---------------------------------------------------------------------------------


def mismatch(checkout: Path, rel: str, how: str) -> IntegrityError:
    """The `IntegrityError` of a checkout that does not match its version at ``rel``."""
    return IntegrityError(
        f"{rel}: {how} (the cached checkout at {checkout} does not match its version)",
        path=rel,
        hint=_HINT,
    )


def agrees(index: Index, expected: ExpectedTree, checkout: Path) -> None:
    """Raise `IntegrityError` unless ``index`` holds exactly what ``expected`` (rebuilt from
    the version's evidence) says: paths, kinds, executable bits, digests."""
    files = dict(index.files)
    links = dict(index.links)
    for rel, data in expected.extra.items():
        entry = files.pop(rel, None)
        if entry is None or entry[0] != object_name(digest("sha256", data), False):
            raise mismatch(checkout, rel, "content differs")
    for e in expected.entries:
        if e.kind == "dir":
            if e.path not in index.dirs:
                raise mismatch(checkout, e.path, "missing or not a directory")
            continue
        if e.kind == "link":
            target = links.pop(e.path, None)
            if target is None:
                raise mismatch(checkout, e.path, "missing or not a symlink")
            if digest(e.algorithm, os.fsencode(target)) != e.digest:
                raise mismatch(checkout, e.path, "symlink target differs")
            continue
        file = files.pop(e.path, None)
        if file is None:
            raise mismatch(checkout, e.path, "missing")
        name, alias = file
        if name.endswith(".x") != e.executable:
            raise mismatch(checkout, e.path, "executable bit differs")
        have = name[:64] if e.algorithm == "sha256" else alias.partition(":")[2]
        if have != e.digest or (e.algorithm != "sha256" and not alias.startswith(e.algorithm)):
            raise mismatch(checkout, e.path, "content differs")
    extra = sorted(p for p in (*files, *links) if p.split("/", 1)[0] not in expected.ignored)
    if extra:
        raise mismatch(checkout, extra[0], "unexpected file")


# -- eviction ----------------------------------------------------------------------------------


def release(trash: Path, index: Index | None, store: ObjectStore) -> int:
    """Remove a checkout already moved out of the way (``trash``) and the objects only it
    linked; returns the bytes freed on disk. Objects still linked elsewhere get their stamps
    recorded again (unlinking changed their ctime) when they were intact just before."""
    from conveyor._cachefs import remove_tree, tree_size

    if index is None:  # not made of objects (an older layout): its files are its own
        size = tree_size(trash)[0]
        remove_tree(trash)
        return size
    names = [name for name, _alias in index.files.values()]
    recorded = store.stamps.get(names)
    before: dict[str, Stamp] = {}
    for name in dict.fromkeys(names):
        try:
            now = Stamp.of(os.lstat(store.path(name)))
        except FileNotFoundError:
            continue
        if recorded.get(name) == now:
            before[name] = now
    remove_tree(trash)
    store.restamp(before)
    return store.collect(names)[0]
