"""Noticing that another process wrote to the SQLite database, without querying it.

A waiting claim (`conveyor.server.api.claim_blocking`, the HTTP claim route) and a watch
(`api.watch_run`) must learn of a run created by another process — ``conveyor run`` next to an
embedded worker — promptly. Querying the database every 50 ms for that costs an idle embedded
worker ~5 % of a core. Instead, `DatabaseWatch` watches the database's directory and calls its
``ring`` callback (the context's doorbell) when the database file, its ``-wal`` or its
``-journal`` changes; waiters then query once, and otherwise only at a slow fallback interval
(`ServerContext.poll_seconds`).

How it watches, best first:

- **inotify** (Linux, through ``inotify_simple``: a ~200-line ctypes wrapper of the system
  calls, no compiled code, kept up to date; chosen over ``watchdog``/``watchfiles``, which bring
  an observer framework or a compiled extension for one directory watch): a thread blocks in
  ``poll()`` on the inotify descriptor and a stop pipe, so an idle process makes no system call
  at all. A write by any process appends to the WAL (``IN_MODIFY``); a checkpoint writes the
  database file; a new WAL or journal is ``IN_CREATE``. Readers only touch ``-shm`` through
  ``mmap``, which inotify does not report, so reads never wake anyone (``IN_CLOSE_WRITE`` is
  not watched: every SQLite connection opens the files for writing, so a reader's close would
  ring). Wake-ups are coalesced:
  at most one ring per `COALESCE_SECONDS`;
- **stat polling** where inotify is unavailable (another OS, no inotify instances left): the
  thread compares the three files' size, mtime and inode every `STAT_POLL_SECONDS` — a few
  ``stat`` calls instead of a query.

The thread starts on the first `start` (a short command that never waits starts none) and stops
on `close`. A watch that cannot be set up at all leaves ``active`` False, and callers keep
polling the database quickly. The process's own writes ring too (harmless: one extra query).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COALESCE_SECONDS", "STAT_POLL_SECONDS", "DatabaseWatch"]

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.01
"""After a ring, events of the next this many seconds are folded into one."""
STAT_POLL_SECONDS = 0.1
"""How often the fallback compares the database files' stat results."""
_SUFFIXES = ("", "-wal", "-journal")


class DatabaseWatch:
    """Calls ``ring`` when the SQLite database at ``path`` changes (see the module)."""

    def __init__(self, path: Path, ring: Callable[[], None]) -> None:
        self.path = Path(os.path.abspath(path))
        self.ring = ring
        self.names = frozenset(self.path.name + suffix for suffix in _SUFFIXES)
        self.mode: str | None = None
        """``"inotify"`` or ``"stat"`` once started; None before (or after `close`)."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1

    @property
    def active(self) -> bool:
        """True while a watch thread runs (waiters may then poll slowly)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Start watching (idempotent); True when a watch is active. Changes made after this
        returns are reported."""
        with self._lock:
            if self.active:
                return True
            if self._stop_r < 0:
                self._stop_r, self._stop_w = os.pipe()
            notify = _inotify(self.path.parent)
            if notify is not None:
                self.mode = "inotify"
                target: Callable[[], None] = lambda: self._follow_inotify(notify)  # noqa: E731
            else:
                self.mode = "stat"
                snapshot = self._stat()
                target = lambda: self._follow_stat(snapshot)  # noqa: E731
            self._thread = threading.Thread(target=target, name="conveyor-dbwatch", daemon=True)
            self._thread.start()
            logger.debug("database watch started path=%s mode=%s", self.path, self.mode)
            return True

    def close(self) -> None:
        """Stop the thread (it exits at once); a later `start` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            if self._stop_w >= 0:
                os.write(self._stop_w, b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            if self._thread is None and self._stop_r >= 0:
                os.close(self._stop_r)
                os.close(self._stop_w)
                self._stop_r, self._stop_w = -1, -1
            self.mode = None

    # -- the two ways to follow changes --------------------------------------------------------

    def _follow_inotify(self, notify: Any) -> None:
        poller = select.poll()
        poller.register(notify.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._stop_r in ready:
                    return
                names = {event.name for event in notify.read(timeout=0)}
                if names & self.names:
                    self._ring()
                    time.sleep(COALESCE_SECONDS)
        except OSError as exc:  # pragma: no cover - the descriptor failed under us
            logger.warning("database watch stopped path=%s error=%s", self.path, exc)
        finally:
            notify.close()

    def _follow_stat(self, snapshot: tuple[tuple[int, int, int], ...]) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        while not poller.poll(int(STAT_POLL_SECONDS * 1000)):
            now = self._stat()
            if now != snapshot:
                snapshot = now
                self._ring()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        found = []
        for suffix in _SUFFIXES:
            try:
                st = os.stat(f"{self.path}{suffix}")
            except OSError:
                found.append((-1, -1, -1))
                continue
            found.append((st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(found)

    def _ring(self) -> None:
        try:
            self.ring()
        except Exception:  # pragma: no cover - a doorbell does not fail
            logger.exception("database watch could not ring")


def _inotify(directory: Path) -> Any:
    """An inotify instance watching ``directory`` for writes, or None where there is none."""
    try:
        from inotify_simple import INotify, flags
    except ImportError:  # not Linux (the dependency is Linux-only)
        return None
    try:
        notify = INotify()
    except (OSError, AttributeError) as exc:  # no inotify: another OS, or the limit reached
        logger.info("no inotify, the database watch polls stat instead reason=%s", exc)
        return None
    mask = flags.MODIFY | flags.CREATE | flags.MOVED_TO
    try:
        notify.add_watch(directory, mask)
    except OSError as exc:
        notify.close()
        logger.info("cannot watch %s, polling stat instead reason=%s", directory, exc)
        return None
    return notify
