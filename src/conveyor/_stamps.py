"""Stamps of sealed files: what a file's inode looked like when its content was last confirmed.

A `Stamp` is ``(inode, size, mtime, ctime)`` in nanoseconds, as git's index keeps them. Writing
to a file changes its mtime and ctime; resetting the mtime afterwards (``utime``) changes the
ctime again, and the ctime cannot be set by anyone but the kernel's clock. So a file whose stat
still equals the stamp recorded when its bytes were hashed still holds those bytes (a bad disk
that flips bits silently is the exception, as it is for git).

Linking and unlinking a file change its ctime too (the link count is part of the inode), so the
object store records a new stamp after each link or unlink it makes itself (see
`conveyor._objects`): a stat is recorded only when it was taken right after the content was
confirmed (hashed, or checked against an earlier stamp and then linked).

`StampBook` keeps the stamps of an object store in one append-only file of 64-byte records
(object digest, executable bit, inode, size, mtime, ctime); the last record of a name wins, a
record with inode 0 forgets it. A batch is one ``write`` with ``O_APPEND``: processes append
side by side, and since records never cross a page, a reader (or a process killed mid-write)
never leaves more than whole records behind. Each process keeps what it read and reads only what
was appended since; `StampBook.compact` rewrites the file when it has grown well past what is
live. A file that cannot be read is taken as empty: stamps are only a shortcut, and a missing
stamp means "hash it".
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["Stamp", "StampBook"]

logger = logging.getLogger(__name__)

_RECORD = struct.Struct("<32sQQqq")
"""Object digest, inode (0: forgotten), size (the executable bit its top bit), mtime, ctime."""
_EXEC_BIT = 1 << 63
_SUFFIX = ".x"


class Stamp(NamedTuple):
    """What an inode looked like: number, size, modification and change times (ns)."""

    ino: int
    size: int
    mtime: int
    ctime: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Read:
    """What this process has read of one stamp file."""

    ino: int = -1
    offset: int = 0
    changes: int = 0
    table: dict[str, Stamp] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_READS: dict[str, _Read] = {}
_READS_LOCK = threading.Lock()


def _pack(name: str, stamp: Stamp | None) -> bytes:
    digest = bytes.fromhex(name[:64])
    if stamp is None:
        return _RECORD.pack(digest, 0, _EXEC_BIT if name.endswith(_SUFFIX) else 0, 0, 0)
    size = stamp.size | (_EXEC_BIT if name.endswith(_SUFFIX) else 0)
    return _RECORD.pack(digest, stamp.ino, size, stamp.mtime, stamp.ctime)


def _apply(table: dict[str, Stamp], data: bytes) -> None:
    for digest, ino, size, mtime, ctime in _RECORD.iter_unpack(data):
        name = digest.hex() + (_SUFFIX if size & _EXEC_BIT else "")
        if ino == 0:
            table.pop(name, None)
        else:
            table[name] = Stamp(ino, size & ~_EXEC_BIT, mtime, ctime)


class StampBook:
    """Stamps by object name in the file at ``path`` (created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        key = os.fspath(self.path)
        with _READS_LOCK:
            self._read = _READS.setdefault(key, _Read())

    @property
    def changes(self) -> int:
        """A number that changes whenever this process's view of the stamps does."""
        return self._read.changes

    def get(self, names: Iterable[str]) -> dict[str, Stamp]:
        """The recorded stamps of ``names`` (those without one are left out)."""
        self._refresh()
        return self.remembered(names)

    def remembered(self, names: Iterable[str]) -> dict[str, Stamp]:
        """The stamps of ``names`` as this process last read them (no file read)."""
        table = self._read.table
        found = {}
        for name in names:
            stamp = table.get(name)
            if stamp is not None:
                found[name] = stamp
        return found

    def record(self, stamps: Iterable[tuple[str, Stamp]]) -> None:
        """Record ``(name, stamp)`` pairs (one append)."""
        pairs = list(stamps)
        data = b"".join(_pack(name, stamp) for name, stamp in pairs)
        after = self._append(data)
        with self._read.lock:
            self._read.table.update(pairs)
            self._read.changes += 1
            self._read_own(data, after)

    def forget(self, names: Iterable[str]) -> None:
        """Drop the stamps of ``names`` (objects removed from the store)."""
        gone = list(names)
        data = b"".join(_pack(name, None) for name in gone)
        after = self._append(data)
        with self._read.lock:
            for name in gone:
                self._read.table.pop(name, None)
            self._read.changes += 1
            self._read_own(data, after)

    def _read_own(self, data: bytes, after: os.stat_result | None) -> None:
        """After appending ``data`` (the file's stat right after, when one write took it all):
        when nothing else was appended since this process last read the file, take its own
        records as read instead of reading them back (caller holds the lock)."""
        read = self._read
        if after is None or after.st_size != read.offset + len(data):
            return
        if read.ino == after.st_ino or (read.ino == -1 and read.offset == 0):
            read.ino, read.offset = after.st_ino, after.st_size

    def compact(self, live: Iterable[str]) -> None:
        """Rewrite the file with the stamps of ``live`` names only, when it has grown past twice
        what they take (the caller keeps other writers out: the store's exclusive lock)."""
        self._refresh()
        keep = self.remembered(live)
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size <= 2 * _RECORD.size * len(keep) + (1 << 20):
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(b"".join(_pack(name, stamp) for name, stamp in keep.items()))
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning("object stamps not compacted path=%s error=%s", self.path, exc)
            tmp.unlink(missing_ok=True)
            return
        logger.info("object stamps compacted path=%s records=%d", self.path, len(keep))

    def _append(self, data: bytes) -> os.stat_result | None:
        """Append ``data``; the file's stat right after, when one ``write`` took all of it."""
        if not data:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            logger.warning("object stamps not recorded path=%s error=%s", self.path, exc)
            return None
        try:
            view = memoryview(data)
            written = os.write(fd, view)
            if written == len(data):
                return os.fstat(fd)
            view = view[written:]
            while view:  # a short write leaves whole records: records never cross a page
                view = view[os.write(fd, view) :]
        except OSError as exc:
            logger.warning("object stamps not recorded path=%s error=%s", self.path, exc)
        finally:
            os.close(fd)
        return None

    def _refresh(self) -> None:
        """Read what was appended since this process last looked (all of it after a compact)."""
        read = self._read
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            with read.lock:
                st = os.fstat(fd)
                if st.st_ino != read.ino:
                    read.ino, read.offset = st.st_ino, 0
                    read.table.clear()
                    read.changes += 1
                whole = (st.st_size - read.offset) // _RECORD.size * _RECORD.size
                if whole <= 0:
                    return
                data = os.pread(fd, whole, read.offset)
                whole = len(data) // _RECORD.size * _RECORD.size
                _apply(read.table, data[:whole])
                read.offset += whole
                read.changes += 1
        except OSError as exc:
            logger.warning("object stamps unreadable path=%s error=%s", self.path, exc)
        finally:
            os.close(fd)
