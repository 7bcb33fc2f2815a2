"""Streaming a run's output to the server in batches.

`RunLogs` collects records for one run and sends them with ``client.write_logs`` from a
background thread, every `FLUSH_SECONDS` or as soon as `BATCH_SIZE` records wait. `RunLogs.close`
sends whatever is left, so every line is on the server before the run's final state is.

Batches are numbered 1, 2, 3, ... per run attempt (when `RunLogs` is given the ``attempt``) and
sent strictly in order, each one until the server has it: a batch keeps its records and its
number once it has been sent, so sending it again after a lost reply is recognised by the server
and stored once (`conveyor.server.service.logs`). A batch the server refuses (4xx: too large, the
run is gone) is dropped with a warning.

Memory is bounded by `MAX_PENDING` records (and `MAX_PENDING_BYTES` of text) waiting. While the
server takes batches, nothing is dropped: `RunLogs.emit` waits for room, so the pump stops reading
the child's pipe and a flow that prints faster than its lines can be sent is slowed, not cut
short (backpressure). Only while shipping fails — the server unreachable, answering 502/503/504,
or not taking a batch for `STALL_SECONDS` — does room come from dropping: the oldest batches
after the one in hand go, counted, and in their place the run's log gets one line saying how
many (``[conveyor] N log lines dropped while the server was unreachable``), sent in order once
the server takes batches again; `RunLogs.dropped` (the worker's ``logs dropped`` warning) is
exactly the number of lines missing. A producer that must not wait (the shipping thread itself,
or a pump whose child has exited: what is left is one pipe buffer) queues past the bound; with no
shipping thread (not started, or closed) room comes from dropping.

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
from dataclasses import dataclass
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
MAX_PENDING_BYTES = 32 << 20
MAX_LINE = 64 * 1024
RETRY_MAX_SECONDS = 2.0
"""The longest pause between two tries of a batch while the server is away."""
STALL_SECONDS = 60.0
"""How long a producer waits for room while no batch is taken before lines are dropped."""
ROOM_POLL_SECONDS = 0.1


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


@dataclass(eq=False)
class _Batch:
    """Records sealed under a number; a gap stands for dropped batches (its one record says how
    many lines) and grows until it is the next batch to send."""

    number: int
    records: list[LogRecord]
    size: int = 0
    dropped: int = 0

    @property
    def gap(self) -> bool:
        return self.dropped > 0


def _gap_record(dropped: int, timestamp: datetime) -> LogRecord:
    return LogRecord(
        timestamp=timestamp,
        level="WARNING",
        stream="worker",
        message=f"[conveyor] {dropped} log lines dropped while the server was unreachable",
    )


class RunLogs:
    """Buffered, ordered, numbered log shipping for one run attempt."""

    def __init__(self, client: LogWriter, run_id: str, *, attempt: int | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.mask = SecretMask()
        self.attempt = attempt
        self.dropped = 0
        """Lines dropped to bound memory while shipping failed (each one missing on the server)."""
        self._unreachable = False
        self._stalled = False
        self._pending: list[LogRecord] = []
        self._unsent: deque[_Batch] = deque()
        self._queued = 0
        self._queued_size = 0
        self._next_batch = 1
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._progress = time.monotonic()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RunLogs:
        self._thread = threading.Thread(
            target=self._loop, name=f"logs-{self.run_id[:8]}", daemon=True
        )
        self._progress = time.monotonic()
        self._thread.start()
        return self

    def emit(
        self,
        message: str,
        *,
        level: str = "INFO",
        stream: str = "log",
        timestamp: datetime | None = None,
        done: threading.Event | None = None,
    ) -> None:
        """Queue one record (secret values masked), first waiting for room while the server
        takes batches (module docstring); ``done`` set means the producer must not wait."""
        if self.mask:
            message = self.mask.apply(message)
        if len(message) > MAX_LINE:
            message = message[:MAX_LINE] + " [truncated]"
        record = LogRecord(
            timestamp=timestamp or datetime.now(UTC), level=level, stream=stream, message=message
        )
        with self._lock:
            stalled = self._stalled
            drop = self._wait_for_room(done)
            stalled = self._stalled and not stalled
            self._pending.append(record)
            self._queued += 1
            self._queued_size += len(message)
            if drop:
                self._make_room()
            if len(self._pending) >= BATCH_SIZE:
                self._wake.set()
        if stalled:  # logged without the lock: an in-process flow's handler emits here
            logger.warning("log shipping stalled, dropping run=%s", self.run_id)

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
        with self._lock:
            self._closed.set()
            self._room.notify_all()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if not self.flush(attempts=attempts, timeout=timeout):
            logger.error("logs not sent run=%s count=%d", self.run_id, self.unsent)
        if self.dropped:
            logger.warning("logs dropped run=%s count=%d", self.run_id, self.dropped)

    # --- room -------------------------------------------------------------------------------------

    def _full(self) -> bool:
        return self._queued >= MAX_PENDING or self._queued_size >= MAX_PENDING_BYTES

    def _wait_for_room(self, done: threading.Event | None) -> bool:
        """(The lock is held.) Wait while the queue is full and the server takes batches; True
        when room must come from dropping (shipping fails, or there is no shipping thread)."""
        waited = time.monotonic()
        while self._full():
            thread = self._thread
            if thread is None or self._closed.is_set() or self._unreachable or self._stalled:
                return True
            if thread is threading.current_thread() or (done is not None and done.is_set()):
                return False
            if time.monotonic() - max(waited, self._progress) >= STALL_SECONDS:
                self._stalled = True
                return True
            self._wake.set()
            self._room.wait(ROOM_POLL_SECONDS)
        return False

    def _make_room(self) -> None:
        """(The lock is held.) Drop the oldest batches after the one that may be in flight
        until the queue fits, counting them in a gap batch in their place."""
        while self._full():
            at = 2 if len(self._unsent) > 1 and self._unsent[1].gap else 1
            if len(self._unsent) <= at:
                if not self._pending:
                    return
                self._seal_locked()
                continue
            victim = self._unsent[at]
            del self._unsent[at]
            lost = len(victim.records)
            self._queued -= lost
            self._queued_size -= victim.size
            self.dropped += lost
            if at == 2:
                gap = self._unsent[1]
                gap.dropped += lost
                gap.records = [_gap_record(gap.dropped, gap.records[0].timestamp)]
            else:
                first = victim.records[0].timestamp
                self._unsent.insert(1, _Batch(victim.number, [_gap_record(lost, first)], 0, lost))

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
                records = entry.records  # a gap's line is final once it is the next to send
            try:
                self._write(entry.number, records)
            except ApiError as exc:
                if isinstance(exc, ServerUnavailable) or (exc.status_code or 0) >= 500:
                    with self._lock:
                        first = not self._unreachable
                        self._unreachable = True
                        self._room.notify_all()
                    if first:
                        logger.warning(
                            "server unavailable, keeping logs run=%s count=%d",
                            self.run_id,
                            self.unsent,
                        )
                    return False
                logger.warning(
                    "logs refused run=%s batch=%d error=%s", self.run_id, entry.number, exc
                )
            with self._lock:
                if self._unsent and self._unsent[0] is entry:
                    self._unsent.popleft()
                    if not entry.gap:
                        self._queued -= len(records)
                        self._queued_size -= entry.size
                back = self._unreachable or self._stalled
                self._unreachable = self._stalled = False
                self._progress = time.monotonic()
                self._room.notify_all()
            if back:
                logger.warning("server reachable again, sending logs run=%s", self.run_id)
        return True

    def _write(self, number: int, records: list[LogRecord]) -> None:
        if self.attempt is None:
            if records:
                self.client.write_logs(self.run_id, records)
            return
        self.client.write_logs(self.run_id, records, attempt=self.attempt, batch=number)

    def _seal(self) -> None:
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        while self._pending:
            records, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
            size = sum(len(r.message) for r in records)
            self._unsent.append(_Batch(self._next_batch, records, size))
            self._next_batch += 1

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


def pump_lines(
    pipe: IO[bytes],
    logs: RunLogs,
    *,
    stream: str,
    level: str,
    done: threading.Event | None = None,
) -> None:
    """Forward each line of ``pipe`` (a child's stdout/stderr) until it closes; while the logs
    wait for room the pipe is not read, so the child waits too (``done``: see `RunLogs.emit`)."""
    with pipe:
        for raw in iter(pipe.readline, b""):
            text = raw.decode(errors="replace").rstrip("\r\n")
            logs.emit(text, level=level, stream=stream, done=done)


def pump_records(pipe: IO[bytes], logs: RunLogs, *, done: threading.Event | None = None) -> None:
    """Forward the child's logging records (JSON lines) until the pipe closes."""
    with pipe:
        for raw in iter(pipe.readline, b""):
            emit_record_line(raw, logs, done=done)


def emit_record_line(raw: bytes, logs: RunLogs, *, done: threading.Event | None = None) -> None:
    """One JSON line from the child's logging handler → one record (garbage is kept as text)."""
    text = raw.decode(errors="replace").rstrip("\r\n")
    try:
        data = json.loads(text)
        message = str(data["message"])
        level = str(data.get("level", "INFO"))
        when = datetime.fromtimestamp(float(data["t"]), UTC)
    except (ValueError, KeyError, TypeError):
        logs.emit(text, stream="log", done=done)
        return
    logs.emit(message, level=level, stream="log", timestamp=when, done=done)


def emit_all(logs: RunLogs, lines: Iterable[str], *, level: str = "INFO") -> None:
    """Queue several worker-side lines (a traceback, a notice) as records of the run."""
    for line in lines:
        logs.emit(line, level=level, stream="worker")
