"""Filesystem primitives of the code cache: names, read-only trees, forced removal, lease locks.

Layout of one source's directory (``<root>/<source-key>/``)::

    <version>/                    the checkout: exactly the code, read-only
    <version>.meta.json           size, file count, redacted source description, created time;
                                  its mtime is the version's "last used" time
    <version>.lock                the fill lock (`filelock.FileLock`): held while fetching
    <version>.lease               a shared `fcntl.flock` per lease; eviction takes it exclusive
    .index/<version>              which object each file of the checkout links
                                  (`conveyor._cacheindex`)
    .proofs/<version>             the source's evidence for the version (`Source.proof`)
    .tmp-<version>-<hex>          a fill in progress (or left by a killed process)
    .trash-<version>-<hex>        an evicted checkout being removed
    .spare-dirs-<shape>-<hex>     empty directories of the latest checkout, made after a git fill
                                  for the next one to put in place (`conveyor._premade`)
    .scratch/                     the source's persistent scratch directory (a git mirror)
    .scratch.meta.json            its size and file count after its last use (the mtime)
    .scratch.lock                 held while a fill fetches or verifies through it

Leases are flocks, so they die with the process that holds them: no PID files, nothing stale.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor._fs import atomic_write
from conveyor._names import is_version
from conveyor.errors import CacheError

logger = logging.getLogger(__name__)

__all__ = [
    "META_SUFFIX",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "check_version",
    "discard",
    "discards",
    "is_leased",
    "lease_path",
    "lock_path",
    "lock_shared",
    "meta_path",
    "read_meta",
    "remove_tree",
    "seal_tree",
    "sweep",
    "temp_name",
    "tree_size",
    "try_lock_exclusive",
    "version_of_temp",
    "write_json_atomic",
]

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
META_SUFFIX = ".meta.json"
_READ_ONLY_DIR = 0o555
_READ_ONLY_FILE = 0o444
_READ_ONLY_EXEC = 0o555
_ANY_EXEC = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def check_version(version: str) -> None:
    """Refuse a version that cannot safely name a directory in the cache."""
    if not is_version(version):  # the one rule for versions: `conveyor._names`
        raise CacheError(
            f"{version!r} is not a version the code cache can store",
            hint="a version is a commit hash, sha256-<hex> bundle digest or image digest",
        )


def meta_path(checkout: Path) -> Path:
    """``<key>/<version>.meta.json`` for ``<key>/<version>``."""
    return checkout.with_name(checkout.name + META_SUFFIX)


def lock_path(checkout: Path) -> Path:
    """``<key>/<version>.lock`` for ``<key>/<version>``."""
    return checkout.with_name(checkout.name + ".lock")


def lease_path(checkout: Path) -> Path:
    """``<key>/<version>.lease`` for ``<key>/<version>``."""
    return checkout.with_name(checkout.name + ".lease")


def temp_name(prefix: str, version: str) -> str:
    """``.tmp-<version>-<8 hex>`` (or ``.trash-…``): a unique sibling name."""
    return f"{prefix}{version}-{secrets.token_hex(4)}"


def version_of_temp(name: str, prefix: str) -> str | None:
    """The version a ``.tmp-…``/``.trash-…`` name was made for, or None if it is not one."""
    if not name.startswith(prefix):
        return None
    version, sep, token = name[len(prefix) :].rpartition("-")
    return version if sep and len(token) == 8 else None


def seal_tree(root: Path) -> tuple[int, int]:
    """Make ``root`` read-only (files 0o444, or 0o555 if executable; dirs 0o555).

    Returns ``(bytes, files)``: the total size of regular files and symlinks, and their number.
    Symlinks are counted but not followed or changed.
    """
    size = files = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                    continue
                size += st.st_size
                files += 1
                if stat.S_ISREG(st.st_mode):
                    mode = _READ_ONLY_EXEC if st.st_mode & _ANY_EXEC else _READ_ONLY_FILE
                    if stat.S_IMODE(st.st_mode) != mode:
                        os.chmod(entry.path, mode)
        os.chmod(directory, _READ_ONLY_DIR)
    return size, files


def tree_size(root: Path) -> tuple[int, int]:
    """``(bytes, files)`` of a tree, without changing it (for entries whose metadata is lost)."""
    size = files = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return size, files


def _ignore_missing(func: Callable[..., Any], path: str, exc: BaseException) -> None:
    if not isinstance(exc, FileNotFoundError):
        raise exc


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) tree or file; a missing path is not an error.

    Write permission is restored on every directory first, so this works for a normal user on a
    sealed checkout. Two processes removing the same tree at once both succeed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    for dirpath, _dirs, _files in os.walk(path):
        try:
            os.chmod(dirpath, 0o700)
        except FileNotFoundError:
            continue
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_ignore_missing)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: _ignore_missing(f, p, info[1]))


def write_json_atomic(path: Path, data: dict[str, Any], *, tmp: Path) -> None:
    """Write ``data`` to ``path`` through the temporary file ``tmp`` and `os.replace`."""
    with atomic_write(path, tmp=tmp) as out:
        out.write((json.dumps(data, sort_keys=True, indent=1) + "\n").encode())


def read_meta(path: Path) -> dict[str, Any] | None:
    """The metadata dict at ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (an evictor may have unlinked it)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def lock_shared(path: Path, *, timeout: float) -> int:
    """Hold a shared flock on ``path`` (created if needed); close the returned fd to release.

    An evictor holds the exclusive lock only for a rename and two unlinks, so this polls until the
    lock is free, then checks that the file it locked is still the one at ``path``.
    """
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise CacheError(
                    f"timed out waiting to lease {path.name.removesuffix('.lease')}"
                ) from None
            time.sleep(0.005)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def try_lock_exclusive(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if anyone holds a lease on it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if _same_file(fd, path):
        return fd
    os.close(fd)
    return None


def is_leased(path: Path) -> bool:
    """Whether any process (this one included) holds a lease on the lease file ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_DISCARDS = [0]
"""Trees `discard` removed in this process: each may leave objects nobody links any more."""


def discards() -> int:
    """How many trees `discard` has removed in this process (see `conveyor._cacheentries.prune`)."""
    return _DISCARDS[0]


def discard(path: Path) -> None:
    """`remove_tree`, logging instead of raising: debris must never fail the caller."""
    _DISCARDS[0] += 1
    try:
        remove_tree(path)
    except OSError as exc:
        logger.warning("cache could not remove path=%s error=%s", path, exc.strerror or exc)


def sweep(key_dir: Path, *, held: str | None = None) -> None:
    """Remove debris in one source's directory: trash, fills whose lock nobody holds, and the
    metadata and lease files of versions that are gone.

    ``held`` is a version whose fill lock the caller holds: its leftovers are stale by definition.
    """
    try:
        names = set(os.listdir(key_dir))
    except FileNotFoundError:
        return
    for name in sorted(names):
        try:
            _sweep_one(key_dir, name, names=names, held=held)
        except OSError as exc:
            logger.warning("cache could not clean path=%s error=%s", key_dir / name, exc)
    for kept in (".index", ".proofs"):  # evidence of versions a killed fill never renamed
        try:
            orphans = set(os.listdir(key_dir / kept)) - names
        except OSError:
            continue
        for version in sorted(orphans):
            with _unless_filling(key_dir / version, held=version == held) as free:
                if free and not (key_dir / version).exists():
                    (key_dir / kept / version).unlink(missing_ok=True)


def _sweep_one(key_dir: Path, name: str, *, names: set[str], held: str | None) -> None:
    path = key_dir / name
    if version_of_temp(name, TRASH_PREFIX) is not None:
        discard(path)
    elif (version := version_of_temp(name, TMP_PREFIX)) is not None:
        with _unless_filling(key_dir / version, held=version == held) as free:
            if free:
                logger.info("cache removing stale fill path=%s", path)
                discard(path)
    elif name.endswith(META_SUFFIX) and name[: -len(META_SUFFIX)] not in names:
        version = name[: -len(META_SUFFIX)]
        with _unless_filling(key_dir / version, held=version == held) as free:
            if free and not (key_dir / version).exists():
                path.unlink(missing_ok=True)
    elif name.endswith(".lease") and name.removesuffix(".lease") not in names:
        fd = try_lock_exclusive(path)
        if fd is not None:
            try:
                if not (key_dir / name.removesuffix(".lease")).exists():
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)


@contextmanager
def _unless_filling(checkout: Path, *, held: bool) -> Iterator[bool]:
    """Yield True while holding ``checkout``'s fill lock (or if the caller holds it already),
    False when another process is filling it."""
    from filelock import FileLock, Timeout

    if held:
        yield True
        return
    lock = FileLock(lock_path(checkout), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
