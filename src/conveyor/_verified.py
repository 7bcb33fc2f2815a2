"""Every use of a checkout is checked: `checked` (behind `CodeCache.checkout`) and `copy_out`.

A checkout is verified when it is fetched, but it then sits on disk for as long as it is used:
a flow running as the worker's user, a bad disk or a careless hand can change it. So every use
checks it first, cheaply (`conveyor._cachecheck.check`: the stat of each file against the stamp
its object recorded when its bytes were last hashed; only a file whose stat differs is hashed
again), after checking that the checkout's index agrees with what the source rebuilds from the
evidence kept beside it (`Source.proof` / `Source.expected`: the evidence must hash to the
version, so it need not be trusted either; the agreement is remembered per process while neither
file changes). The one use that follows a fill in the same process is not checked again: that
fill has just sealed every file (each a link to an object it checked or stored, its stat still
the one taken right after) and found the index to agree with the evidence (`filled`).

On a mismatch the checkout is discarded (unless another process has already replaced it) and
fetched again, once; a second mismatch, or a fetch that fails its own verification, raises
`IntegrityError` naming the file.

`copy_out` hands a checked checkout out as writable files (reflinked where the file system can,
else copied in the kernel): for ``conveyor runs code`` and workspaces that cannot share it.
`link_out` lays a checked checkout out as hard links to its objects (directories of its own), for
a workspace whose flow runs as a user who cannot write the sealed files; `unlink_out` removes
it. Both re-record the stamps of the objects whose link count they changed, holding the store's
lock so that concurrent checks wait for the stamps instead of hashing.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from conveyor import _cachefs as fs
from conveyor._cachecheck import check
from conveyor._cacheindex import agrees, index_path, read_index, release
from conveyor._fs import atomic_write, copy_writable
from conveyor._stamps import Stamp
from conveyor.errors import CacheError, ConfigError, IntegrityError

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.sources.base import Source

__all__ = [
    "Copied",
    "checked",
    "copy_out",
    "filled",
    "link_out",
    "proof_path",
    "read_proof",
    "unlink_out",
    "used",
    "write_proof",
]

logger = logging.getLogger(__name__)

MAX_PROOF_BYTES = 1 << 30
"""Evidence larger than this is not read (a git proof is the commit's trees: megabytes at most)."""
REFETCH = "cached checkout does not match its version, fetching it again"

_AGREED: dict[str, tuple[Stamp | None, Stamp | None]] = {}
"""Checkouts whose index agreed with their evidence in this process, with both files' stamps."""
_FRESH: dict[str, tuple[tuple[int, int], tuple[Stamp | None, Stamp | None]]] = {}
"""Checkouts this process filled and verified just now, until their first use (or `ensure`):
the directory's identity and the stamps of its evidence and index then."""


class Copied(NamedTuple):
    """What a copy wrote: bytes of file content, and files (symlinks included); `copy_out` adds
    the seconds spent getting the checkout (a fetch when it was not cached) and copying."""

    bytes: int
    files: int
    fetch_seconds: float = 0.0
    copy_seconds: float = 0.0


@contextmanager
def checked(cache: CodeCache, source: Source, version: str) -> Iterator[Path]:
    """A leased checkout of ``version`` that was checked just now (see the module docstring)."""
    for attempt in (1, 2):
        with cache.lease(source, version) as path:
            identity = _identity(path)
            try:
                verify_use(cache, source, version, path)
            except IntegrityError as exc:
                if attempt == 2:
                    raise
                logger.warning("%s version=%s path=%s error=%s", REFETCH, version, path, exc)
            else:
                yield path
                return
        _discard(cache, path, version, identity)
    raise AssertionError("unreachable")  # pragma: no cover


def verify_use(cache: CodeCache, source: Source, version: str, path: Path) -> None:
    """Raise `IntegrityError` unless the checkout at ``path`` is still ``version``."""
    index = read_index(path)
    if index is None:
        raise IntegrityError(
            f"the checkout of {version[:19]} at {path} has no index (made by an older Conveyor)",
            path=".",
        )
    key = os.fspath(path)
    stamps = (_stamp(proof_path(path)), _stamp(index_path(path)))
    fresh = _FRESH.pop(key, None)
    if fresh is not None and fresh == (_identity(path), stamps):
        return  # filled, sealed and checked by this process just now (`filled`)
    if _AGREED.get(key) != stamps:
        expected = source.expected(version, read_proof(proof_path(path)))
        if expected is not None:
            agrees(index, expected, path)
        _remember(key, stamps)
    check(path, index, cache.objects)


def filled(path: Path) -> None:
    """Called by the fill that just renamed the checkout at ``path`` into place, having sealed
    it (every file a link to an object it checked or stored) and found its index to agree with
    the evidence: the first use that follows need not check it again, and the agreement holds
    while neither file changes."""
    key = os.fspath(path)
    stamps = (_stamp(proof_path(path)), _stamp(index_path(path)))
    try:
        identity = _identity(path)
    except OSError:  # gone already: the next use fills it again
        return
    _remember(key, stamps)
    if len(_FRESH) > 64:
        _FRESH.clear()
    _FRESH[key] = (identity, stamps)


def used(path: Path) -> None:
    """A use of the checkout at ``path`` found it in place (`CodeCache.ensure`, warm): the next
    check is a full one, whoever filled it."""
    _FRESH.pop(os.fspath(path), None)


def _remember(key: str, stamps: tuple[Stamp | None, Stamp | None]) -> None:
    if len(_AGREED) > 1024:
        _AGREED.clear()
    _AGREED[key] = stamps


def copy_out(cache: CodeCache, source: Source, version: str, dest: Path) -> Copied:
    """See `CodeCache.copy_out`."""
    _prepare(dest)
    started = time.monotonic()
    with checked(cache, source, version) as path:
        fetched = time.monotonic()
        copied = Copied(*copy_writable(path, dest))
    return copied._replace(fetch_seconds=fetched - started, copy_seconds=time.monotonic() - fetched)


def link_out(
    cache: CodeCache, checkout: Path, dest: Path, *, owner: tuple[int, int] | None = None
) -> Copied:
    """Lay the checked, leased ``checkout`` out in ``dest`` (new or empty): its files as hard
    links to their objects, its directories and symlinks new (owned by ``owner``, a uid and
    gid, when given). `OSError` when links cannot be made (another file system: copy instead)."""
    index = read_index(checkout)
    if index is None:
        raise IntegrityError(f"the checkout at {checkout} has no index", path=".")
    _prepare(dest)
    started = time.monotonic()
    store = cache.objects
    with store.locked(exclusive=True):
        recorded = store.stamps.get(name for name, _alias in index.files.values())
        before: dict[str, Stamp] = {}
        for rel in sorted(index.dirs):
            os.mkdir(dest / rel, 0o755)
        for rel, (name, _alias) in index.files.items():
            st = Stamp.of(os.lstat(checkout / rel))
            if recorded.get(name) == st:
                before[name] = st
            os.link(checkout / rel, dest / rel, follow_symlinks=False)
        for rel, target in index.links.items():
            os.symlink(target, dest / rel)
        store.restamp(before)
    if owner is not None:
        for rel in (*sorted(index.dirs), *index.links):
            os.lchown(dest / rel, *owner)
        os.chown(dest, *owner)
    return Copied(index.size, len(index.files) + len(index.links), 0.0, time.monotonic() - started)


def unlink_out(cache: CodeCache, checkout: Path, dest: Path) -> None:
    """Remove a tree `link_out` made (and whatever the flow added to it)."""
    index = read_index(checkout)
    store = cache.objects
    with store.locked(exclusive=True):
        before: dict[str, Stamp] = {}
        if index is not None:
            recorded = store.stamps.get(name for name, _alias in index.files.values())
            for rel, (name, _alias) in index.files.items():
                try:
                    st = Stamp.of(os.lstat(dest / rel))
                except OSError:
                    continue
                if recorded.get(name) == st:
                    before[name] = st
        fs.remove_tree(dest)
        store.restamp(before)


def proof_path(checkout: Path) -> Path:
    """``<key>/.proofs/<version>``: the evidence `Source.expected` reads (see `Source.proof`)."""
    return checkout.parent / ".proofs" / checkout.name


def write_proof(checkout: Path, proof: bytes | None) -> None:
    """Keep ``proof`` for the checkout at ``checkout`` (called under its fill lock)."""
    if proof is not None:
        proof_path(checkout).parent.mkdir(exist_ok=True)
        tmp = checkout.with_name(fs.temp_name(fs.TMP_PREFIX, checkout.name))
        with atomic_write(proof_path(checkout), tmp=tmp, mode=0o444) as out:
            out.write(proof)


def read_proof(path: Path) -> bytes | None:
    """The evidence file's bytes, or None when it is missing (or is not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_PROOF_BYTES:
            return None
        return fh.read(MAX_PROOF_BYTES + 1)


def _stamp(path: Path) -> Stamp | None:
    try:
        return Stamp.of(os.lstat(path))
    except OSError:
        return None


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _prepare(dest: Path) -> None:
    try:
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        empty = not any(dest.iterdir())
    except OSError as exc:
        raise ConfigError(f"cannot write code into {dest}: {exc.strerror or exc}") from None
    if not empty:
        raise ConfigError(f"{dest} is not an empty directory", hint="pick a new directory")


def _discard(cache: CodeCache, path: Path, version: str, identity: tuple[int, int]) -> None:
    """Move the mismatching checkout out of the way (under its fill lock), unless another
    process already did and filled a new one; the next `ensure` fetches it again."""
    from filelock import FileLock, Timeout

    trash = path.with_name(fs.temp_name(fs.TRASH_PREFIX, version))
    try:
        with FileLock(fs.lock_path(path), timeout=cache.lock_timeout):
            try:
                if _identity(path) != identity:
                    return
            except FileNotFoundError:
                return
            index = read_index(path)
            os.replace(path, trash)
            fs.meta_path(path).unlink(missing_ok=True)
            proof_path(path).unlink(missing_ok=True)
            index_path(path).unlink(missing_ok=True)
    except Timeout as exc:
        raise CacheError(f"timed out discarding the mismatching checkout of {version}") from exc
    except OSError as exc:
        raise CacheError(
            f"could not discard the mismatching checkout of {version} at {path}: "
            f"{exc.strerror or exc}",
            hint="check the permissions of the cache directory (CONVEYOR_CACHE_DIR)",
        ) from exc
    logger.warning("discarded a cached checkout that did not match its version version=%s", version)
    try:
        release(trash, index, cache.objects)
    except OSError as exc:
        logger.warning("cache could not remove path=%s error=%s", trash, exc.strerror or exc)
