"""The database: one engine per `Database`, short transactions, retries when SQLite is busy.

SQLite (the embedded default) is opened in WAL mode with a busy timeout and foreign keys on; the
driver's own transaction handling is switched off so that reads begin ``DEFERRED`` and writes
begin ``IMMEDIATE`` (taking the write lock up front, so a transaction never fails half-way when
another process writes). A write that still meets ``database is locked`` is retried from the
start. PostgreSQL runs at READ COMMITTED; claims use ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from conveyor.errors import ConfigError, MissingDependency
from conveyor.secrets import redact_url

__all__ = ["Database", "normalize_url", "utcnow"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 10_000
_ATTEMPTS = 8
_WRITE_OPTION = "conveyor_write"


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3; anything else is kept as given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """An engine with read and write transactions; the engine is created on first use."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._engine: Engine | None = None
        self._writer: Engine | None = None

    def __repr__(self) -> str:
        return f"Database({redact_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return make_url(self.url).get_backend_name()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, for SQLite on disk; None otherwise."""
        url = make_url(self.url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
            self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        return self._engine

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a read transaction and return its result (retried when busy)."""
        return self._transact(fn, self.engine)

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a write transaction, retried from the start when the database is busy.

        ``fn`` must not have side effects outside the session: it may run more than once.
        """
        self.engine  # noqa: B018 - creates the writer engine too
        assert self._writer is not None
        return self._transact(fn, self._writer)

    def _transact(self, fn: Callable[[Session], T], engine: Engine) -> T:
        delay = 0.02
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    return fn(session)
            except DBAPIError as exc:
                if attempt == _ATTEMPTS or not _is_transient(exc):
                    raise
                logger.debug("db retry attempt=%d reason=%s", attempt, type(exc.orig).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        """Close every pooled connection."""
        if self._engine is not None:
            self._engine.dispose()

    def _create_engine(self) -> Engine:
        url = make_url(self.url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            return _sqlite_engine(self.url, self.sqlite_path)
        if backend == "postgresql":
            try:
                import psycopg  # noqa: F401
            except ImportError as exc:
                raise MissingDependency(
                    "psycopg", extra="postgres", feature="a PostgreSQL database"
                ) from exc
            return create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        raise ConfigError(
            f"database {redact_url(self.url)!r} is not supported",
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        )


def _sqlite_engine(url: str, path: Path | None) -> Engine:
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # CONVEYOR_HOME names a file, or a folder we may not write
            raise ConfigError(
                f"cannot make the folder of the database {path}: {exc.strerror} ({exc.filename})",
                hint="set CONVEYOR_HOME to a folder this user can write (or CONVEYOR_DATABASE_URL)",
            ) from None
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=24,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see _on_begin
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if path is not None:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _is_transient(exc: DBAPIError) -> bool:
    """SQLite busy/locked, or a PostgreSQL serialization failure / deadlock."""
    text = str(exc.orig).lower()
    if (
        "database is locked" in text
        or "database is busy" in text
        or "database table is locked" in text
    ):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in {"40001", "40P01"}
