"""File-system helpers shared by the cache, the bundle store, results and the worker child."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "clone_file", "copy_writable", "out_of_space"]

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FICLONE = 0x40049409  # ioctl(dest_fd, FICLONE, src_fd): share the extents, copy on write
_NO_CLONE = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.EPERM})


@contextmanager
def atomic_write(
    dest: Path,
    *,
    tmp: Path | None = None,
    mode: int = 0o644,
    fsync: bool = False,
) -> Iterator[BinaryIO]:
    """Write ``dest`` all or nothing.

    Yields a binary file opened on a temporary sibling (``tmp``, or a unique
    ``.<name>.*.tmp`` in the same directory), then gives it ``mode`` and `os.replace`\\ s it
    into place. On any error the temporary is removed and ``dest`` is left as it was.
    """
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        tmp = Path(name)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def clone_file(source: str | Path, dest: str | Path, mode: int, *, reflink: bool = True) -> bool:
    """Create ``dest`` (``mode``) with the content of ``source``: a reflink (the file system
    shares the blocks and copies on write: btrfs, XFS, ...) when ``reflink`` and possible, else
    a copy made by the kernel. Returns whether it was a reflink."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            if reflink:
                try:
                    fcntl.ioctl(out, _FICLONE, src)
                except OSError as exc:
                    if exc.errno not in _NO_CLONE:
                        raise
                else:
                    os.fchmod(out, mode)
                    return True
            size = os.fstat(src).st_size
            copied = 0
            while copied < size:
                sent = os.sendfile(out, src, copied, size - copied)
                if sent == 0:
                    break
                copied += sent
            os.fchmod(out, mode)
        finally:
            os.close(out)
    finally:
        os.close(src)
    return False


def copy_writable(source: Path, dest: Path) -> tuple[int, int]:
    """Copy the tree at ``source`` (a read-only checkout) into the existing, empty directory
    ``dest`` as ordinary writable files; returns ``(bytes, files)`` copied.

    Files become ``0o644`` (``0o755`` when executable), directories ``0o755``; symbolic links are
    copied as links (a checkout only holds links that stay inside the tree). Each file is a
    reflink where the file system supports them (`clone_file`), so a copy costs almost nothing
    there; elsewhere the kernel copies the bytes.
    """
    reflink = True
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(source):
        relative = os.path.relpath(dirpath, source)
        target_dir = dest if relative == "." else dest / relative
        for name in list(dirnames):
            src = os.path.join(dirpath, name)
            if os.path.islink(src):  # os.walk does not descend into links: copy them as links
                os.symlink(os.readlink(src), target_dir / name)
                dirnames.remove(name)
                files += 1
            else:
                (target_dir / name).mkdir(mode=0o755)
        for name in filenames:
            src = os.path.join(dirpath, name)
            dst = target_dir / name
            info = os.lstat(src)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISREG(info.st_mode):
                mode = 0o755 if info.st_mode & 0o111 else 0o644
                reflink = clone_file(src, dst, mode, reflink=reflink)
                total += info.st_size
            files += 1
    return total, files


def out_of_space(exc: BaseException) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` `OSError` that caused ``exc`` (itself, its ``__cause__`` or its
    ``__context__``, even when re-raised ``from None``), or None when a full disk is not why."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack and len(seen) < 32:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return current
        stack += [e for e in (current.__context__, current.__cause__) if e is not None]
    return None
