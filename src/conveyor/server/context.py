"""What every request handler shares: the database, the secret box, the doorbell, the sweeper.

**Lease expiry and the server's own absence.** A lease expires when its holder stops renewing
it, but a holder can only renew while the server can hear it. So `ServerContext.sweep` expires a
run's lease only once this server has been *available* for at least that run's lease length
(``runs.lease_seconds``, one lease), counting from:

- the moment the front end started serving (``start_grace``: the HTTP server, `create_app`).
  A server that was away longer than a lease does not crash every run in flight when it comes
  back: their workers get one lease to renew, as they would have had the server stayed up;
- the end of the last database outage this process saw (a failed sweep marks the database
  down; the first sweep that succeeds again restarts the count). The HTTP server sweeps every
  second, so it sees every outage longer than that.

The embedded front end (`conveyor.server.local.LocalTransport`) is a "server" per process: every
command and every worker answers the API itself, over the shared database. There a holder
renews through its own process, so its server is never away while the holder lives: a process
that just started (``conveyor runs ls``) may expire the lease of a worker that died at once, as
it always could, and only database outages the process saw defer expiry. So embedded contexts
are made with ``start_grace=False``: a start grace there would only mean that short commands
never expire anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from conveyor.server._dbwatch import DatabaseWatch
from conveyor.server.db import Database, utcnow
from conveyor.server.secrets import SecretBox
from conveyor.settings import Settings

__all__ = [
    "FAST_POLL_SECONDS",
    "SLOW_POLL_SECONDS",
    "Doorbell",
    "ServerContext",
    "is_outage",
]

logger = logging.getLogger(__name__)

SWEEP_EVERY = 0.5
"""Seconds between lazy lease-expiry checks in one process (each is one indexed read)."""
FAST_POLL_SECONDS = 0.05
"""How often a waiting claim or watch queries the database when nothing tells it of other
processes' writes (PostgreSQL, or a SQLite watch that could not start)."""
SLOW_POLL_SECONDS = 1.5
"""How often it queries while a `DatabaseWatch` rings the doorbell on every write: only a
fallback, in case an event is missed."""


class Doorbell:
    """Wakes this process's long-polling claims and watches when a run may have changed.

    `ring` may be called from any thread; `wait` runs on an event loop, `wait_blocking` in a
    thread. Rings are counted: a waiter takes a `ticket` *before* it looks at the database and
    passes it as ``since``, so a ring that came between its look and its wait is not lost (the
    wait returns at once). Other processes' writes ring it through the context's
    `conveyor.server._dbwatch.DatabaseWatch`, or are noticed by polling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._events: set[threading.Event] = set()
        self._rings = 0

    def ticket(self) -> int:
        """The number of rings so far (pass it to a wait as ``since``)."""
        with self._lock:
            return self._rings

    def wait_blocking(self, timeout: float, *, since: int | None = None) -> bool:
        """Block this thread until rung (after ticket ``since``) or ``timeout`` seconds pass;
        True if rung."""
        event = threading.Event()
        with self._lock:
            if since is not None and self._rings != since:
                return True
            self._events.add(event)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                self._events.discard(event)

    async def wait(self, timeout: float, *, since: int | None = None) -> bool:
        """Sleep until rung (after ticket ``since``) or ``timeout`` seconds pass; True if rung."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if since is not None and self._rings != since:
                return True
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(entry)

    def ring(self) -> None:
        with self._lock:
            self._rings += 1
            waiters = list(self._waiters)
            events = list(self._events)
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)
        for event in events:
            event.set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class ServerContext:
    """``start_grace``: give leases one lease after this context starts serving (see the
    module); the HTTP server sets it, the embedded transport does not."""

    settings: Settings
    db: Database
    box: SecretBox
    doorbell: Doorbell = field(default_factory=Doorbell)
    start_grace: bool = True
    watch: DatabaseWatch | None = None
    """Rings the doorbell when another process writes (SQLite on disk; see `watch_changes`)."""
    stopping: bool = False
    """Set when the server is told to stop: long polls answer at once instead of holding it."""
    _last_sweep: float = 0.0
    _sweep_lock: threading.Lock = field(default_factory=threading.Lock)
    _available_since: float = -math.inf
    _database_down: bool = False

    def __post_init__(self) -> None:
        if self.start_grace:
            self._available_since = time.monotonic()
        path = self.db.sqlite_path
        if self.watch is None and path is not None:
            self.watch = DatabaseWatch(path, self.doorbell.ring)

    def watch_changes(self) -> None:
        """Make sure other processes' writes ring the doorbell from now on (a waiter calls this
        before it first looks at the database); a no-op without a watch."""
        if self.watch is not None and not self.watch.active:
            self.watch.start()

    @property
    def poll_seconds(self) -> float:
        """How long a waiter may sleep between queries (see `SLOW_POLL_SECONDS`)."""
        watch = self.watch
        return SLOW_POLL_SECONDS if watch is not None and watch.active else FAST_POLL_SECONDS

    def stop_waiting(self) -> None:
        """The server is stopping: wake every long poll and let none wait again (from any
        thread)."""
        self.stopping = True
        self.doorbell.ring()

    def close(self) -> None:
        """Stop the watch and close the database's connections."""
        if self.watch is not None:
            self.watch.close()
        self.db.dispose()

    def serving(self) -> None:
        """The front end starts answering now (the grace of a start counts from here)."""
        if self.start_grace:
            with self._sweep_lock:
                self._available_since = time.monotonic()

    @property
    def available_for(self) -> float:
        """Seconds this server has been able to hear workers renew (``inf``: always)."""
        return max(time.monotonic() - self._available_since, 0.0)

    @property
    def database_down(self) -> bool:
        """True from a sweep that met a database outage until one succeeds again."""
        return self._database_down

    def sweep(self, *, force: bool = False) -> list[str]:
        """Crash (and maybe retry) runs whose lease expired — only runs whose lease is no longer
        than `available_for` (see the module); throttled unless ``force``."""
        from conveyor.server.service import claims

        now_mono = time.monotonic()
        with self._sweep_lock:
            if not force and now_mono - self._last_sweep < SWEEP_EVERY:
                return []
            self._last_sweep = now_mono
        now = utcnow()
        grace = self.available_for
        try:
            due = self.db.read(lambda s: claims.has_expired_leases(s, now=now, available_for=grace))
            if self._came_back() or not due:
                return []
            expired = self.db.write(
                lambda s: claims.expire_leases(s, now=utcnow(), available_for=grace)
            )
        except DBAPIError as exc:
            if is_outage(exc):
                self._went_down()
            raise
        if expired:
            logger.info("lease expired runs=%s", ",".join(expired))
            self.doorbell.ring()
        return expired

    def _went_down(self) -> None:
        with self._sweep_lock:
            if not self._database_down:
                logger.warning("database unavailable: lease expiry paused")
            self._database_down = True

    def _came_back(self) -> bool:
        """True when this sweep is the first to reach the database after an outage."""
        if not self._database_down:
            return False
        with self._sweep_lock:
            if not self._database_down:
                return False
            self._database_down = False
            self._available_since = time.monotonic()
        logger.warning("database available again: leases get one lease of grace")
        return True


def is_outage(exc: DBAPIError) -> bool:
    """A database error that means "cannot reach or use the database" (not bad input)."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(exc.connection_invalidated)
