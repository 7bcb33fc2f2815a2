"""What every request handler shares: the database, the secret box, the doorbell, the sweeper."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from conveyor.server.db import Database, utcnow
from conveyor.server.secrets import SecretBox
from conveyor.settings import Settings

__all__ = ["Doorbell", "ServerContext"]

logger = logging.getLogger(__name__)

SWEEP_EVERY = 0.5
"""Seconds between lazy lease-expiry checks in one process (each is one indexed read)."""


class Doorbell:
    """Wakes this process's long-polling claims when a run may have become claimable.

    `ring` may be called from any thread; `wait` runs on an event loop, `wait_blocking` in a
    thread. Other processes writing to the same database are noticed by polling (see
    `conveyor.server.api.claim_once`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._events: set[threading.Event] = set()

    def wait_blocking(self, timeout: float) -> bool:
        """Block this thread until rung or ``timeout`` seconds pass; True if rung."""
        event = threading.Event()
        with self._lock:
            self._events.add(event)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                self._events.discard(event)

    async def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` seconds pass; True if rung."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
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
    settings: Settings
    db: Database
    box: SecretBox
    doorbell: Doorbell = field(default_factory=Doorbell)
    _last_sweep: float = 0.0
    _sweep_lock: threading.Lock = field(default_factory=threading.Lock)

    def sweep(self, *, force: bool = False) -> list[str]:
        """Crash (and maybe retry) runs whose lease expired; throttled unless ``force``."""
        from conveyor.server.service import claims

        now_mono = time.monotonic()
        with self._sweep_lock:
            if not force and now_mono - self._last_sweep < SWEEP_EVERY:
                return []
            self._last_sweep = now_mono
        now = utcnow()
        if not self.db.read(lambda s: claims.has_expired_leases(s, now=now)):
            return []
        expired = self.db.write(lambda s: claims.expire_leases(s, now=utcnow()))
        if expired:
            logger.info("lease expired runs=%s", ",".join(expired))
            self.doorbell.ring()
        return expired
