"""Log shipping: batches, order, and riding out a server that is away."""

from __future__ import annotations

import threading

from conveyor.errors import ServerUnavailable
from conveyor.schemas import LogRecord
from conveyor.worker.logs import BATCH_SIZE, RunLogs, emit_record_line


class FlakyWriter:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[LogRecord]] = []
        self.lock = threading.Lock()

    def write_logs(self, run_id: str, records: list[LogRecord]) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ServerUnavailable("down")
            self.batches.append(list(records))


def test_records_arrive_in_order_in_bounded_batches() -> None:
    writer = FlakyWriter(failures=0)
    logs = RunLogs(writer, "r").start()

    for i in range(BATCH_SIZE * 3 + 7):
        logs.emit(f"line {i}")
    logs.close()

    sent = [r.message for batch in writer.batches for r in batch]
    assert sent == [f"line {i}" for i in range(BATCH_SIZE * 3 + 7)]
    assert max(len(batch) for batch in writer.batches) <= BATCH_SIZE


def test_records_are_kept_while_the_server_is_away() -> None:
    writer = FlakyWriter(failures=3)
    logs = RunLogs(writer, "r")  # no background thread: close() does the retrying

    for i in range(10):
        logs.emit(f"line {i}")
    logs.close(attempts=5)

    assert [r.message for batch in writer.batches for r in batch] == [
        f"line {i}" for i in range(10)
    ]


def test_child_record_lines_keep_level_and_time_and_garbage_is_kept_as_text() -> None:
    writer = FlakyWriter(failures=0)
    logs = RunLogs(writer, "r")

    emit_record_line(b'{"t": 0, "level": "ERROR", "logger": "x", "message": "bad"}\n', logs)
    emit_record_line(b"not json\n", logs)
    logs.close()

    first, second = writer.batches[0]
    assert (first.level, first.message, first.timestamp.year) == ("ERROR", "bad", 1970)
    assert (second.level, second.message) == ("INFO", "not json")
