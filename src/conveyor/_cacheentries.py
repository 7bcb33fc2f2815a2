"""What the code cache holds, and evicting it: checkouts and scratch directories, LRU.

Three kinds of entry live in the cache (layout in `conveyor._cachefs`):

- a **checkout** ``<version>/``: held by leases (shared flocks on ``<version>.lease``) while runs
  use it, and by its fill lock ``<version>.lock``;
- a **scratch** directory ``.scratch/`` of a source that keeps state between fetches (a git
  mirror): held by its lock ``.scratch.lock`` while a fill fetches or verifies through it. Its
  ``.scratch.meta.json`` records its size after each use, and its mtime is the last use;
- an **env** ``<root>/.envs/<digest>/``: a run environment (`conveyor.envs`), laid out like a
  checkout (``<digest>.meta.json``, ``.lock``, ``.lease``) and held the same way.

All count against the byte budget and are evicted least recently used first, never while held:
eviction takes the entry's locks without waiting, renames it to ``.trash-…`` and removes that.

Checkouts are trees of hard links into the object store (``<root>/.objects``, see
`conveyor._objects`), so the budget counts each stored file once however many checkouts link it
(`used_bytes`), and evicting a checkout frees what it held alone: the objects left with no other
link are removed, and that is what the eviction reports (`CacheEntry.freed`). A prune first
removes objects nobody links any more (left by killed fills or evictions).
Functions here raise `OSError`; `conveyor.cache` turns it into a `CacheError` naming the cache.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from conveyor import _cachefs as fs
from conveyor._cacheindex import index_path, read_index, release
from conveyor._objects import OBJECTS_DIR, ObjectStore
from conveyor._premade import discard_spares
from conveyor._verified import proof_path

__all__ = [
    "CHECKOUT",
    "ENV",
    "ENVS_DIR",
    "SCRATCH",
    "SCRATCH_DIR",
    "CacheEntry",
    "evict",
    "free_bytes",
    "list_entries",
    "prune",
    "subdirs",
    "used_bytes",
]

logger = logging.getLogger(__name__)

CHECKOUT = "checkout"
SCRATCH = "scratch"
SCRATCH_DIR = ".scratch"
ENV = "env"
ENVS_DIR = ".envs"


@dataclass(frozen=True)
class CacheEntry:
    """One entry of the cache: a checkout of a version, or a source's scratch directory.

    ``source`` is the redacted one-line source description; ``version`` is empty for scratch;
    ``leased`` means in use (a run's lease on a checkout, a fill holding a scratch directory).
    """

    source_key: str
    version: str
    path: Path
    size: int
    last_used: datetime
    leased: bool
    source: str
    files: int = 0
    kind: str = CHECKOUT
    freed: int = 0
    """For an evicted entry: the bytes its eviction freed on disk (shared files stay)."""


def subdirs(path: Path) -> list[Path]:
    """Directories in ``path`` whose names do not start with a dot; none if it is missing."""
    try:
        with os.scandir(path) as it:
            return [
                Path(e.path)
                for e in it
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_entries(root: Path) -> list[CacheEntry]:
    """Every checkout, scratch directory and env under ``root``, least recently used first."""
    found: list[CacheEntry] = []
    for path in subdirs(root / ENVS_DIR):
        entry = _read_entry(ENVS_DIR, path, kind=ENV)
        if entry is not None:
            found.append(entry)
    for key_dir in subdirs(root):
        for path in subdirs(key_dir):
            entry = _read_entry(key_dir.name, path, kind=CHECKOUT)
            if entry is not None:
                found.append(entry)
        scratch = key_dir / SCRATCH_DIR
        if scratch.is_dir():
            entry = _read_entry(key_dir.name, scratch, kind=SCRATCH)
            if entry is not None:
                found.append(entry)
    found.sort(key=lambda e: (e.last_used, e.source_key, e.kind, e.version))
    return found


def _read_entry(source_key: str, path: Path, *, kind: str) -> CacheEntry | None:
    meta_file = fs.meta_path(path)
    meta = fs.read_meta(meta_file) or {}
    try:
        stamp = os.stat(meta_file).st_mtime_ns
    except FileNotFoundError:
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None  # evicted while we looked
    size, files = meta.get("size"), meta.get("files")
    if not isinstance(size, int) or not isinstance(files, int):
        size, files = fs.tree_size(path)
    held = fs.lock_path(path) if kind == SCRATCH else fs.lease_path(path)
    return CacheEntry(
        source_key=source_key,
        version="" if kind == SCRATCH else path.name,
        path=path,
        size=size,
        last_used=datetime.fromtimestamp(stamp / 1e9, UTC),
        leased=fs.is_leased(held),
        source=str(meta.get("source", "unknown")),
        files=files,
        kind=kind,
    )


def evict(entry: CacheEntry) -> int | None:
    """Remove one entry unless a lease or a fill holds it; the bytes freed on disk (files it
    shared with other checkouts stay), or None when it was not removed."""
    from filelock import FileLock, Timeout

    path = entry.path
    lease_fd = fs.try_lock_exclusive(fs.lease_path(path))
    if lease_fd is None:
        return None
    trash = path.with_name(fs.temp_name(fs.TRASH_PREFIX, path.name))
    try:
        with FileLock(fs.lock_path(path), timeout=0):
            if not path.is_dir():
                return None
            index = read_index(path) if entry.kind == CHECKOUT else None
            os.replace(path, trash)
            fs.meta_path(path).unlink(missing_ok=True)
            fs.lease_path(path).unlink(missing_ok=True)
            proof_path(path).unlink(missing_ok=True)
            index_path(path).unlink(missing_ok=True)
    except Timeout:
        return None
    finally:
        os.close(lease_fd)
    if entry.kind == SCRATCH:
        discard_spares(os.fspath(path.parent))
    try:
        freed = release(trash, index, ObjectStore(path.parent.parent / OBJECTS_DIR))
    except OSError as exc:
        logger.warning("cache could not remove path=%s error=%s", trash, exc.strerror or exc)
        freed = 0
    logger.info(
        "cache evicted kind=%s version=%s source_key=%s bytes=%d freed=%d",
        entry.kind,
        entry.version or "-",
        entry.source_key,
        entry.size,
        freed,
    )
    return freed


def used_bytes(
    root: Path, entries: list[CacheEntry], objects: tuple[int, int] | None = None
) -> tuple[int, int, int]:
    """``(bytes, object bytes, objects)`` the cache holds on disk: each stored file once, plus
    scratch directories, envs and checkouts not made of objects (an older layout).
    ``objects``: the store's usage when the caller has it already."""
    object_bytes, objects_count = objects or ObjectStore(root / OBJECTS_DIR).usage()
    other = sum(e.size for e in entries if e.kind != CHECKOUT or not index_path(e.path).exists())
    return object_bytes + other, object_bytes, objects_count


def free_bytes(root: Path) -> int | None:
    """Free bytes on the file system holding ``root`` (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


SWEEP_EVERY = 600.0
"""Seconds after which a ``lazy`` prune sweeps the object store even when nothing says it must."""
_SWEPT: dict[str, int] = {}
"""Per cache root: `conveyor._cachefs.discards` when this process last swept its store."""


def prune(
    root: Path,
    budget: int,
    *,
    keep: frozenset[Path] = frozenset(),
    free_needed: int = 0,
    lazy: bool = False,
) -> list[CacheEntry]:
    """Evict least-recently-used entries that are not in use and not in ``keep`` until the cache
    holds at most ``budget`` bytes and, when ``free_needed`` is given, until that many bytes are
    free on its disk (as far as evicting can get there); remove debris of killed fills first.
    Returns the evicted entries.

    ``lazy`` (around a fill): skip the walk of the object store that finds unlinked objects and
    counts the rest when nothing can need it: the entries' sizes, each checkout counted as if
    it shared nothing (at least what its objects take), are within the budget and the free space
    asked for is there, this process discarded no tree since it last swept, and that sweep (by
    any process) is less than `SWEEP_EVERY` seconds old."""
    for key_dir in [*subdirs(root), root / ENVS_DIR]:
        fs.sweep(key_dir)
    entries = list_entries(root)
    free = free_bytes(root) if free_needed > 0 else None
    if lazy and _needs_no_sweep(root, entries, budget, free, free_needed):
        return []
    swept_after = fs.discards()
    stored = ObjectStore(root / OBJECTS_DIR).sweep()
    _swept(root, swept_after)
    used = used_bytes(root, entries, stored)[0]
    if free is not None and free < free_needed:
        budget = min(budget, max(used - (free_needed - free), 0))
    evicted: list[CacheEntry] = []
    for entry in entries:
        if used <= budget:
            break
        if entry.leased or entry.path in keep:
            continue
        freed = evict(entry)
        if freed is not None:
            used -= freed
            evicted.append(replace(entry, leased=False, freed=freed))
    if used > budget:
        logger.warning(
            "cache over budget used_bytes=%d max_bytes=%d reason=entries in use", used, budget
        )
    return evicted


def _swept_marker(root: Path) -> Path:
    return root / OBJECTS_DIR / ".swept"


def _swept(root: Path, discards: int) -> None:
    _SWEPT[os.fspath(root)] = discards
    marker = _swept_marker(root)
    try:
        marker.touch()
    except OSError as exc:  # only a shortcut: the next lazy prune sweeps again
        logger.debug("cache could not mark its sweep path=%s error=%s", marker, exc)


def _needs_no_sweep(
    root: Path, entries: list[CacheEntry], budget: int, free: int | None, free_needed: int
) -> bool:
    if _SWEPT.get(os.fspath(root)) != fs.discards():
        return False
    try:
        age = time.time() - os.stat(_swept_marker(root)).st_mtime
    except OSError:
        return False
    bound = sum(e.size for e in entries)
    return 0 <= age < SWEEP_EVERY and bound <= budget and (free is None or free >= free_needed)
