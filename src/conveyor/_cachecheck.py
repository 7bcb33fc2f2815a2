"""The check every use of a checkout makes: `check` (see `conveyor._cacheindex` for the index).

One walk of the checkout compares each entry with the index and each file's ``lstat`` with its
object's recorded `Stamp` (as ``git status`` does with its index); only a file whose stat
differs is hashed (`_settle`). A process checking the same checkout again (a worker, run after
run) does not list directories again while none of them changed — adding, removing or renaming
an entry changes a directory's mtime and ctime, which cannot be set back — and ``lstat``s each
file by its path instead: still one stat per file, since a file can be rewritten in place.

Mismatches raise `IntegrityError` naming the first path; the cache then fetches the version
again (see `conveyor._verified`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from conveyor._cacheindex import Index, mismatch
from conveyor._objects import ObjectStore, sealed_mode
from conveyor._stamps import Stamp

__all__ = ["check"]

_FILE = stat.S_IFREG


@dataclass
class _Walked:
    """What a full check of one checkout saw, for the next checks in this process: every
    directory's ``(inode, mtime, ctime)`` taken before it was listed (adding, removing or
    renaming an entry changes its mtime and ctime), and every file's path with the stat its
    object's stamp says it must have (recomputed when the stamps change)."""

    index: Index
    dirs: list[tuple[str, tuple[int, int, int]]]
    changes: int = -1
    files: list[tuple[str, str, tuple[int, int, int, int, int] | None]] = field(
        default_factory=list
    )


_WALKED: dict[str, _Walked] = {}
"""Checkouts this process checked in full, by path (a few: they are large)."""


def check(checkout: Path, index: Index, store: ObjectStore) -> None:
    """Raise `IntegrityError` unless ``checkout`` holds exactly ``index`` with every file still
    its object's bytes (stamps; a file whose stat differs is hashed, see the module docstring).

    The first check in a process lists every directory; later ones, while no directory changed
    since (no entry added, removed or renamed), only ``lstat`` each file by its path."""
    top = os.fspath(checkout)
    walked = _WALKED.get(top)
    if walked is not None and walked.index is index and _same_dirs(walked):
        suspects = _stat_files(walked, index, store)
        if suspects is not None and _same_links(top, index):
            _settle(checkout, suspects, store)
            return
    _WALKED.pop(top, None)
    dirs = _walk(checkout, index, store)
    if len(_WALKED) >= 8:
        _WALKED.pop(next(iter(_WALKED)))
    _WALKED[top] = _Walked(index, dirs)


def _expected(index: Index, store: ObjectStore) -> dict[str, tuple[int, int, int, int, int]]:
    """Object name → the ``(inode, size, mtime, ctime, mode)`` a link to it must have."""
    names = {name for name, _alias in index.files.values()}
    known = store.stamps.remembered(names)
    if len(known) < len(names):
        known.update(store.stamps.get(names - known.keys()))
    return {name: (*stamp, _FILE | sealed_mode(name)) for name, stamp in known.items()}


def _same_links(top: str, index: Index) -> bool:
    try:
        return all(os.readlink(f"{top}/{rel}") == target for rel, target in index.links.items())
    except OSError:
        return False


def _same_dirs(walked: _Walked) -> bool:
    lstat = os.lstat
    try:
        for path, (ino, mtime, ctime) in walked.dirs:
            st = lstat(path)
            if st.st_ino != ino or st.st_mtime_ns != mtime or st.st_ctime_ns != ctime:
                return False
    except OSError:
        return False
    return True


def _stat_files(
    walked: _Walked, index: Index, store: ObjectStore
) -> list[tuple[str, str, os.stat_result]] | None:
    """The files whose stat differs from their stamp; None when one is not a regular file or
    cannot be stat'ed (a full walk then names it)."""
    if walked.changes != store.stamps.changes:
        changes = store.stamps.changes
        expect = _expected(index, store)
        top = walked.dirs[0][0]
        walked.files = [
            (f"{top}/{rel}", rel, expect.get(name)) for rel, (name, _alias) in index.files.items()
        ]
        walked.changes = changes
    files = index.files
    lstat = os.lstat
    suspects: list[tuple[str, str, os.stat_result]] = []
    try:
        for path, rel, want in walked.files:
            st = lstat(path)
            if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode) != want:
                if not stat.S_ISREG(st.st_mode):
                    return None
                suspects.append((rel, files[rel][0], st))
    except OSError:
        return None
    return suspects


def _walk(
    checkout: Path, index: Index, store: ObjectStore
) -> list[tuple[str, tuple[int, int, int]]]:
    """The full check: list every directory, compare each entry with the index, stat each
    file; returns the directories' stamps, each taken before it was listed."""
    expect = _expected(index, store)
    suspects: list[tuple[str, str, os.stat_result]] = []
    files = index.files
    seen_files = seen_links = 0
    top = os.fspath(checkout)
    try:
        st = os.lstat(top)
    except OSError:
        raise mismatch(checkout, ".", "not a readable directory") from None
    dirs = [(top, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns))]
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            with os.scandir(os.path.join(top, prefix) if prefix else top) as it:
                children = list(it)
        except OSError:
            raise mismatch(checkout, prefix or ".", "not a readable directory") from None
        for child in children:
            rel = prefix + child.name
            if child.is_dir(follow_symlinks=False):
                st = child.stat(follow_symlinks=False)
                dirs.append((child.path, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)))
                stack.append(rel + "/")
                continue
            if child.is_symlink():
                if rel not in index.links:
                    raise mismatch(checkout, rel, "unexpected file")
                if os.readlink(child.path) != index.links[rel]:
                    raise mismatch(checkout, rel, "symlink target differs")
                seen_links += 1
                continue
            entry = files.get(rel)
            if entry is None:
                raise mismatch(checkout, rel, "unexpected file")
            st = child.stat(follow_symlinks=False)
            if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode) != expect.get(
                entry[0]
            ):
                if not stat.S_ISREG(st.st_mode):
                    raise mismatch(checkout, rel, "not a regular file")
                suspects.append((rel, entry[0], st))
            seen_files += 1
    if seen_files != len(index.files) or seen_links != len(index.links):
        present = _present(checkout)
        missing = sorted((index.files.keys() | index.links.keys()) - present)
        raise mismatch(checkout, missing[0] if missing else ".", "missing")
    _settle(checkout, suspects, store)
    return dirs


def _present(checkout: Path) -> set[str]:
    found: set[str] = set()
    for top, dirnames, filenames in os.walk(checkout):
        rel = os.path.relpath(top, checkout)
        base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(base + n for n in filenames)
        found.update(base + d for d in dirnames if os.path.islink(os.path.join(top, d)))
    return found


def _settle(
    checkout: Path, suspects: list[tuple[str, str, os.stat_result]], store: ObjectStore
) -> None:
    """Files whose stat differs from the recorded stamp: look again (another process may have
    just linked the object and recorded its new stamp), then hash what still differs."""
    if not suspects:
        return
    with store.locked():  # waits for a workspace linking these objects to record their stamps
        fresh = store.stamps.get(name for _rel, name, _st in suspects)
    confirmed: list[tuple[str, Stamp]] = []
    try:
        for rel, name, st in suspects:
            if fresh.get(name) == Stamp.of(st) and stat.S_IMODE(st.st_mode) == sealed_mode(name):
                continue
            if not store.confirm(name, checkout / rel, ino=st.st_ino, stamps=confirmed):
                raise mismatch(checkout, rel, "content differs")
    finally:
        store.stamps.record(confirmed)
