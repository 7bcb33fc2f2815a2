"""Spare workspaces: a ready copy of a recently run version, so the next run need not wait for one.

Copying a checkout is cheap on a quiet disk, but on a busy one (other processes' ``fsync`` forcing
ext4's journal to flush our fresh copies) a 5 MB tree can take hundreds of milliseconds. After a
run, the worker copies that version's checkout once more, in a background thread, into a spare;
the next run of the same version takes the spare with one ``rename`` instead of copying. A spare
is a pristine, verified copy (`CodeCache.copy_out`; nothing ever runs in it) kept in a directory
only the worker's user can enter, so taking it is the same as copying the checkout at that
moment. At most `SparePool.keep` spares are kept (the oldest are dropped), each worker's under its
own directory, removed when the worker stops.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from conveyor.cache import CodeCache

    SourceSpec = Mapping[str, Any]

__all__ = ["SparePool"]

logger = logging.getLogger(__name__)

WAIT_SECONDS = 30.0
"""The longest a run waits for a spare being made before copying the checkout itself."""

Key = tuple[str, str]
"""(source key, version)."""


class SparePool:
    """Ready-made copies of recent versions' checkouts under ``root``."""

    def __init__(self, root: Path, *, cache: CodeCache, keep: int = 2) -> None:
        self.root = root
        self.cache = cache
        self.keep = keep
        self._ready: OrderedDict[Key, Path] = OrderedDict()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted: queue.Queue[tuple[SourceSpec, str] | None] = queue.Queue()
        self._pending: set[Key] = set()
        self._awaited: set[Key] = set()
        self._thread: threading.Thread | None = None

    def take(self, source: SourceSpec, version: str, dest: Path) -> bool:
        """Move a spare of ``version`` to ``dest`` (which must not exist); False if none.

        A spare being made is waited for (by one run at a time): it has a head start on a copy
        started now.
        """
        key = _key(source, version)
        with self._changed:
            if key in self._pending and key not in self._awaited:
                self._awaited.add(key)
                try:
                    self._changed.wait_for(lambda: key not in self._pending, timeout=WAIT_SECONDS)
                finally:
                    self._awaited.discard(key)
            spare = self._ready.pop(key, None)
        if spare is None:
            return False
        try:
            os.rename(spare, dest)
        except OSError:
            shutil.rmtree(spare.parent, ignore_errors=True)
            return False
        shutil.rmtree(spare.parent, ignore_errors=True)
        return True

    def refill(self, source: SourceSpec, version: str) -> None:
        """Make a spare of ``version`` in the background, unless one is there or on its way."""
        key = _key(source, version)
        with self._lock:
            if self.keep <= 0 or key in self._ready or key in self._pending:
                return
            self._pending.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="spares", daemon=True)
                self._thread.start()
        self._wanted.put((source, version))

    def close(self) -> None:
        """Stop making spares and delete them all."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._wanted.put(None)
            thread.join()
        shutil.rmtree(self.root, ignore_errors=True)

    def _loop(self) -> None:
        while (item := self._wanted.get()) is not None:
            source, version = item
            key = _key(source, version)
            try:
                spare = self._make(source, version)
            except Exception as exc:  # a spare is an optimisation: never fail a run for it
                logger.debug("spare not made version=%s error=%s", version, exc)
                spare = None
            with self._changed:
                self._pending.discard(key)
                if spare is not None:
                    self._ready[key] = spare
                    while len(self._ready) > self.keep:
                        _, old = self._ready.popitem(last=False)
                        shutil.rmtree(old.parent, ignore_errors=True)
                self._changed.notify_all()

    def _make(self, source: SourceSpec, version: str) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # out of the runs' reach
        holder = self.root / f"{version[:24]}-{secrets.token_hex(4)}"
        holder.mkdir()
        try:
            self.cache.copy_out(source, version, holder / "code")
        except BaseException:
            shutil.rmtree(holder, ignore_errors=True)
            raise
        return holder / "code"


def _key(source: SourceSpec, version: str) -> Key:
    import json

    return (json.dumps(dict(source), sort_keys=True, default=str), version)
