"""Streaming a run's output to the server in batches.

`RunLogs` collects records for one run and sends them with ``client.write_logs`` from a
background thread, every `FLUSH_SECONDS` or as soon as `BATCH_SIZE` records wait. `RunLogs.close`
sends whatever is left, so every line is on the server before the run's final state is.

Batches are numbered 1, 2, 3, ... per run attempt (when `RunLogs` is given the ``attempt``) and
sent strictly in order, each one until the server has it: a batch keeps its records and its
number once it has been sent, so sending it again after a lost reply is recognised by the server
and stored once (`conveyor.server.service.logs`). While the server is unreachable, or answers
502/503/504, the batches are kept and sent again when it is back; a batch the server refuses
(4xx: too large, the run is gone) is dropped with a warning. The only bound is memory: past
`MAX_PENDING` records waiting, the oldest batch is dropped and counted.

`pump_lines` reads a child's stdout or stderr pipe line by line; `pump_records` reads the JSON
lines the child's logging handler writes (see `conveyor.worker.child`).

Every record passes through the run's `SecretMask` before it is queued (`RunLogs.hide` registers
a secret value the worker handed to the run; `RunLogs.redact` masks another text, the run's
error): a flow that prints a secret, or its base64, ships ``****``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
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
RETRY_MAX_SECONDS = 2.0
"""The longest pause between two tries of a batch while the server is away."""


class LogWriter(Protocol):
    """What `RunLogs` needs from the client (``attempt`` and ``batch`` only when numbered)."""

    def write_logs(
        self,
        run_id: str,
        records: list[LogRecord],
        *,
        attempt: int | None = None,
        batch: int | None = None,
    ) -> None: ...


_Batch = tuple[int, list[LogRecord]]


class RunLogs:
    """Buffered, ordered, numbered log shipping for one run attempt."""

    def __init__(self, client: LogWriter, run_id: str, *, attempt: int | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.mask = SecretMask()
        self.attempt = attempt
        self.dropped = 0
        self._unreachable = False
        self._pending: list[LogRecord] = []
        self._unsent: deque[_Batch] = deque()
        self._queued = 0
        self._next_batch = 1
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
            self._queued += 1
            if self._queued > MAX_PENDING:
                self._drop_oldest()
            if len(self._pending) >= BATCH_SIZE:
                self._wake.set()

    def hide(self, value: str) -> None:
        """Mask ``value`` (a secret handed to the run) and its base64 forms from now on."""
        self.mask.add(value)

    def redact(self, text: str) -> str:
        """``text`` with the run's secret values masked (for its error, which is stored too)."""
        return self.mask.apply(text)

    @property
    def unsent(self) -> int:
        """Records not yet on the server."""
        with self._lock:
            return self._queued

    def flush(self, *, attempts: int = 1, timeout: float | None = None) -> bool:
        """Send everything queued so far, in order; False if the server could not take it all
        (what is left is kept). Tries ``attempts`` times, or until ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        tries = 0
        with self._send_lock:
            while True:
                if self._send_all():
                    return True
                tries += 1
                if deadline is None and tries >= attempts:
                    return False
                pause = min(0.25 * 2 ** min(tries - 1, 4), RETRY_MAX_SECONDS)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    pause = min(pause, left)
                time.sleep(pause)

    def close(self, *, attempts: int = 20, timeout: float | None = None) -> None:
        """Stop the background thread and send the rest, retrying while the server is away
        (``attempts`` times, or for ``timeout`` seconds when given)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if not self.flush(attempts=attempts, timeout=timeout):
            logger.error("logs not sent run=%s count=%d", self.run_id, self.unsent)
        if self.dropped:
            logger.warning("logs dropped run=%s count=%d", self.run_id, self.dropped)

    # --- sending ----------------------------------------------------------------------------------

    def _send_all(self) -> bool:
        """Seal what is pending into numbered batches and send them in order; False when the
        server is away (the batch in hand and the rest are kept)."""
        self._seal()
        while True:
            with self._lock:
                if not self._unsent:
                    break
                entry = self._unsent[0]
            number, records = entry
            try:
                self._write(number, records)
            except ApiError as exc:
                if isinstance(exc, ServerUnavailable) or (exc.status_code or 0) >= 500:
                    if not self._unreachable:
                        logger.warning(
                            "server unavailable, keeping logs run=%s count=%d",
                            self.run_id,
                            self.unsent,
                        )
                    self._unreachable = True
                    return False
                logger.warning("logs refused run=%s batch=%d error=%s", self.run_id, number, exc)
            with self._lock:
                if self._unsent and self._unsent[0] is entry:
                    self._unsent.popleft()
                    self._queued -= len(records)
        if self._unreachable:
            logger.warning("server reachable again, logs sent run=%s", self.run_id)
        self._unreachable = False
        return True

    def _write(self, number: int, records: list[LogRecord]) -> None:
        if self.attempt is None:
            if records:
                self.client.write_logs(self.run_id, records)
            return
        self.client.write_logs(self.run_id, records, attempt=self.attempt, batch=number)

    def _seal(self) -> None:
        with self._lock:
            while self._pending:
                records, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
                self._unsent.append((self._next_batch, records))
                self._next_batch += 1

    def _drop_oldest(self) -> None:
        """Make room (the lock is held): the oldest sealed batch goes, else the oldest record."""
        if self._unsent:
            _number, records = self._unsent.popleft()
            lost = len(records)
        else:
            del self._pending[0]
            lost = 1
        self._queued -= lost
        self.dropped += lost

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
