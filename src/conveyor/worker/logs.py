"""Streaming a run's output to the server in batches.

`RunLogs` collects records for one run and sends them with ``client.write_logs`` from a
background thread, every `FLUSH_SECONDS` or as soon as `BATCH_SIZE` records wait. `RunLogs.close`
sends whatever is left, so every line is on the server before the run's final state is.

`pump_lines` reads a child's stdout or stderr pipe line by line; `pump_records` reads the JSON
lines the child's logging handler writes (see `conveyor.worker.child`). While the server is
unreachable records are kept (up to `MAX_PENDING`, the oldest dropped first and counted) and sent
when it is back.

Every record passes through the run's `SecretMask` before it is queued (`RunLogs.hide` registers
a secret value the worker handed to the run; `RunLogs.redact` masks another text, the run's
error): a flow that prints a secret, or its base64, ships ``****``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Protocol

from conveyor.errors import ApiError, ServerUnavailable
from conveyor.schemas import LogRecord
from conveyor.worker.masking import SecretMask

__all__ = [
    "BATCH_SIZE",
    "FLUSH_SECONDS",
    "LogWriter",
    "RunLogs",
    "emit_all",
    "emit_record_line",
    "pump_lines",
    "pump_records",
]

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
FLUSH_SECONDS = 0.2
MAX_PENDING = 20_000
MAX_LINE = 64 * 1024


class LogWriter(Protocol):
    """What `RunLogs` needs from the client."""

    def write_logs(self, run_id: str, records: list[LogRecord]) -> None: ...


class RunLogs:
    """Buffered, ordered log shipping for one run."""

    def __init__(self, client: LogWriter, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.mask = SecretMask()
        self.dropped = 0
        self._unreachable = False
        self._pending: list[LogRecord] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RunLogs:
        self._thread = threading.Thread(
            target=self._loop, name=f"logs-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def emit(
        self,
        message: str,
        *,
        level: str = "INFO",
        stream: str = "log",
        timestamp: datetime | None = None,
    ) -> None:
        """Queue one record (secret values masked)."""
        if self.mask:
            message = self.mask.apply(message)
        if len(message) > MAX_LINE:
            message = message[:MAX_LINE] + " [truncated]"
        record = LogRecord(
            timestamp=timestamp or datetime.now(UTC), level=level, stream=stream, message=message
        )
        with self._lock:
            self._pending.append(record)
            if len(self._pending) > MAX_PENDING:
                del self._pending[0]
                self.dropped += 1
            if len(self._pending) >= BATCH_SIZE:
                self._wake.set()

    def hide(self, value: str) -> None:
        """Mask ``value`` (a secret handed to the run) and its base64 forms from now on."""
        self.mask.add(value)

    def redact(self, text: str) -> str:
        """``text`` with the run's secret values masked (for its error, which is stored too)."""
        return self.mask.apply(text)

    def flush(self, *, attempts: int = 1) -> bool:
        """Send what is queued; False if the server could not take it (records are kept)."""
        with self._send_lock:
            for attempt in range(attempts):
                with self._lock:
                    batch, self._pending = self._pending, []
                if not batch:
                    return True
                try:
                    while batch:
                        self.client.write_logs(self.run_id, batch[:BATCH_SIZE])
                        batch = batch[BATCH_SIZE:]
                except ServerUnavailable:
                    if not self._unreachable:
                        logger.warning(
                            "server unavailable, keeping logs run=%s count=%d",
                            self.run_id,
                            len(batch),
                        )
                    self._unreachable = True
                    self._requeue(batch)
                    if attempt + 1 < attempts:
                        self._closed.wait(min(0.5 * 2**attempt, 5.0))
                    continue
                except ApiError as exc:  # the server refused the batch: do not retry it forever
                    logger.warning("logs refused run=%s error=%s", self.run_id, exc)
                    return True
                self._unreachable = False
                return True
            return False

    def _requeue(self, batch: list[LogRecord]) -> None:
        with self._lock:
            self._pending[:0] = batch
            excess = len(self._pending) - MAX_PENDING
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess

    def close(self, *, attempts: int = 20) -> None:
        """Stop the background thread and send the rest (retrying while the server is away)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if not self.flush(attempts=attempts):
            logger.warning("logs lost run=%s count=%d", self.run_id, len(self._pending))
        if self.dropped:
            logger.warning("logs dropped run=%s count=%d", self.run_id, self.dropped)

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self.flush()
            except Exception:  # never let a log problem end the run
                logger.exception("log shipping failed run=%s", self.run_id)


def pump_lines(pipe: IO[bytes], logs: RunLogs, *, stream: str, level: str) -> None:
    """Forward each line of ``pipe`` (a child's stdout/stderr) until it closes."""
    with pipe:
        for raw in iter(pipe.readline, b""):
            logs.emit(raw.decode(errors="replace").rstrip("\r\n"), level=level, stream=stream)


def pump_records(pipe: IO[bytes], logs: RunLogs) -> None:
    """Forward the child's logging records (JSON lines) until the pipe closes."""
    with pipe:
        for raw in iter(pipe.readline, b""):
            emit_record_line(raw, logs)


def emit_record_line(raw: bytes, logs: RunLogs) -> None:
    """One JSON line from the child's logging handler → one record (garbage is kept as text)."""
    text = raw.decode(errors="replace").rstrip("\r\n")
    try:
        data = json.loads(text)
        message = str(data["message"])
        level = str(data.get("level", "INFO"))
        when = datetime.fromtimestamp(float(data["t"]), UTC)
    except (ValueError, KeyError, TypeError):
        logs.emit(text, stream="log")
        return
    logs.emit(message, level=level, stream="log", timestamp=when)


def emit_all(logs: RunLogs, lines: Iterable[str], *, level: str = "INFO") -> None:
    """Queue several worker-side lines (a traceback, a notice) as records of the run."""
    for line in lines:
        logs.emit(line, level=level, stream="worker")
