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

`StampBook` keeps stamps by object name in a SQLite database (WAL, one short transaction per
batch, safe across processes; a process killed mid-write leaves the previous state). When two
processes record the same name, the newer ctime wins. A database that cannot be read is moved
aside and started again empty: stamps are only a shortcut, and a missing stamp means "hash it".

Each process also remembers the stamps it read or recorded (`StampBook.remembered`): a stamp
that was true once stays evidence for that exact stat (any later change to the file gives it
another ctime), so a worker checks a checkout it used before without reading the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["Stamp", "StampBook"]

logger = logging.getLogger(__name__)

_CHUNK = 500  # names per SELECT (SQLite allows 999 parameters by default)
_REMEMBER = 500_000  # stamps kept in memory per process, at most
_SEEN: dict[tuple[str, str], Stamp] = {}
"""(database, name) → a stamp this process read or recorded."""
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS stamps (name TEXT PRIMARY KEY, ino INTEGER NOT NULL, "
    "size INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL) WITHOUT ROWID"
)
_UPSERT = (
    "INSERT INTO stamps (name, ino, size, mtime, ctime) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(name) DO UPDATE SET ino = excluded.ino, size = excluded.size, "
    "mtime = excluded.mtime, ctime = excluded.ctime WHERE excluded.ctime >= stamps.ctime"
)


class Stamp(NamedTuple):
    """What an inode looked like: number, size, modification and change times (ns)."""

    ino: int
    size: int
    mtime: int
    ctime: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StampBook:
    """Stamps by name in the SQLite database at ``path`` (created on first write)."""

    timeout: float = 60.0
    """Seconds a write waits for another process's transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key = str(self.path)

    def remembered(self, names: Iterable[str]) -> dict[str, Stamp]:
        """Stamps of ``names`` this process has seen (no database read)."""
        key = self._key
        found = {}
        for name in names:
            stamp = _SEEN.get((key, name))
            if stamp is not None:
                found[name] = stamp
        return found

    def _remember(self, pairs: Iterable[tuple[str, Stamp]]) -> None:
        if len(_SEEN) > _REMEMBER:
            _SEEN.clear()
        key = self._key
        for name, stamp in pairs:
            _SEEN[key, name] = stamp

    def get(self, names: Iterable[str]) -> dict[str, Stamp]:
        """The recorded stamps of ``names`` (those without one are left out)."""
        found = self._read(names)
        self._remember(found.items())
        return found

    def _read(self, names: Iterable[str]) -> dict[str, Stamp]:
        wanted = list(dict.fromkeys(names))
        found: dict[str, Stamp] = {}
        if not wanted or not self.path.exists():
            return found
        with self._session() as db:
            if db is None:
                return found
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT name, ino, size, mtime, ctime FROM stamps WHERE name IN ({marks})",  # noqa: S608 - only placeholders
                    chunk,
                )
                for name, ino, size, mtime, ctime in rows:
                    found[name] = Stamp(ino, size, mtime, ctime)
        return found

    def record(self, stamps: Iterable[tuple[str, Stamp]]) -> None:
        """Record ``(name, stamp)`` pairs in one transaction (a newer ctime wins)."""
        pairs = list(stamps)
        if pairs:
            self._write(_UPSERT, [(name, *stamp) for name, stamp in pairs])
            self._remember(pairs)

    def forget(self, names: Iterable[str]) -> None:
        """Drop the stamps of ``names`` (objects removed from the store)."""
        rows = [(name,) for name in names]
        for (name,) in rows:
            _SEEN.pop((self._key, name), None)
        if rows:
            self._write("DELETE FROM stamps WHERE name = ?", rows)

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        with self._session(create=True) as db:
            if db is None:
                return
            try:
                with db:
                    db.executemany(sql, rows)
            except sqlite3.DatabaseError as exc:
                self._reset(exc)

    @contextlib.contextmanager
    def _session(self, *, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        """A connection, or None when the database cannot be used (stamps then go missing,
        which costs a hash, never a wrong answer)."""
        try:
            db = self._open(create=create)
        except (sqlite3.DatabaseError, OSError) as exc:
            self._reset(exc)
            try:
                db = self._open(create=create)
            except (sqlite3.DatabaseError, OSError) as again:
                logger.warning("object stamps unavailable path=%s error=%s", self.path, again)
                yield None
                return
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            self._reset(exc)
        finally:
            db.close()

    def _open(self, *, create: bool) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode={'rwc' if create else 'rw'}"
        db = sqlite3.Connection(uri, uri=True, timeout=self.timeout, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _reset(self, exc: BaseException) -> None:
        """Move an unusable database aside (it is only a shortcut) and start again."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            logger.warning("object stamps busy path=%s error=%s", self.path, exc)
            return
        if isinstance(exc, OSError) or not self.path.exists():
            return
        aside = self.path.with_name(f"{self.path.name}.broken-{time.time_ns()}")
        logger.warning("object stamps unreadable, starting again path=%s error=%s", self.path, exc)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
