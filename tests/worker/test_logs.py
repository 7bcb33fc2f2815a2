"""Log shipping: batches, order, and riding out a server that is away."""

from __future__ import annotations

import threading
import time

from conveyor.errors import InvalidRequest, ServerUnavailable
from conveyor.schemas import LogRecord
from conveyor.worker import logs as run_logs
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


class LossyServer:
    """Stores numbered batches once, as the server does; loses the reply to the first ``lose``
    batches it stores (the worker sees the server as unavailable) and refuses batch numbers in
    ``refuse`` (a 413)."""

    def __init__(self, *, lose: int = 0, refuse: frozenset[int] = frozenset()) -> None:
        self.lose = lose
        self.refuse = refuse
        self.sent: list[tuple[int, int, list[str]]] = []
        self.stored: list[str] = []
        self.last: dict[int, int] = {}

    def write_logs(self, run_id, records, *, attempt=None, batch=None) -> None:
        messages = [r.message for r in records]
        self.sent.append((attempt, batch, messages))
        if batch in self.refuse:
            raise InvalidRequest("batch too large", status_code=413)
        if batch > self.last.get(attempt, 0):
            self.last[attempt] = batch
            self.stored.extend(messages)
        if self.lose:
            self.lose -= 1
            raise ServerUnavailable("connection lost")


def test_a_batch_whose_reply_was_lost_is_sent_again_unchanged_and_stored_once() -> None:
    # Given a server that stores the first batch but whose reply is lost
    server = LossyServer(lose=1)
    logs = RunLogs(server, "r", attempt=3)  # no background thread: flush() by hand
    for i in range(BATCH_SIZE + 5):
        logs.emit(f"line {i}")
    # When the logs are flushed while lines keep coming
    assert logs.flush() is False
    logs.emit("late line")
    logs.close(timeout=10)
    # Then batch 1 went twice with the same lines, later lines got later numbers, and the server
    # has every line once, in order
    numbers = [(attempt, batch) for attempt, batch, _ in server.sent]
    assert numbers == [(3, 1), (3, 1), (3, 2), (3, 3)]
    assert server.sent[0][2] == server.sent[1][2] == [f"line {i}" for i in range(BATCH_SIZE)]
    assert server.stored == [f"line {i}" for i in range(BATCH_SIZE + 5)] + ["late line"]
    assert logs.unsent == 0


def test_a_refused_batch_is_dropped_and_the_next_ones_still_go() -> None:
    server = LossyServer(refuse=frozenset({1}))
    logs = RunLogs(server, "r", attempt=1)
    logs.emit("refused")
    assert logs.flush() is True
    logs.emit("kept")
    logs.close()
    assert server.stored == ["kept"]
    assert [batch for _, batch, _ in server.sent] == [1, 2]


def test_a_server_answering_503_keeps_the_logs_until_it_is_back() -> None:
    writer = FlakyWriter(failures=0)
    outage = iter([ServerUnavailable("database unavailable", status_code=503)] * 3)

    def write_logs(run_id, records, **numbered):
        error = next(outage, None)
        if error is not None:
            raise error
        writer.batches.append(list(records))

    writer.write_logs = write_logs  # type: ignore[method-assign]
    logs = RunLogs(writer, "r", attempt=1)
    logs.emit("kept through the outage")
    logs.close(timeout=10)
    assert [r.message for batch in writer.batches for r in batch] == ["kept through the outage"]


class SlowWriter:
    """Takes every batch, a few milliseconds each; notes how many records were waiting."""

    def __init__(self, logs: list[RunLogs], *, pause: float = 0.005) -> None:
        self.logs = logs
        self.pause = pause
        self.stored: list[str] = []
        self.most_waiting = 0

    def write_logs(self, run_id, records, **numbered) -> None:
        self.most_waiting = max(self.most_waiting, self.logs[0].unsent)
        time.sleep(self.pause)
        self.stored.extend(r.message for r in records)


def test_a_producer_faster_than_the_server_waits_and_loses_nothing(monkeypatch) -> None:
    # Given a shipper that keeps at most 500 records and a server slower than the producer
    monkeypatch.setattr(run_logs, "MAX_PENDING", 500)
    holder: list[RunLogs] = []
    writer = SlowWriter(holder)
    logs = RunLogs(writer, "r", attempt=1)
    holder.append(logs)
    logs.start()
    # When 5,000 lines are emitted as fast as possible
    for i in range(5_000):
        logs.emit(f"line {i}")
    logs.close(timeout=30)
    # Then every line arrived in order, none was dropped, and no more than the bound waited
    assert writer.stored == [f"line {i}" for i in range(5_000)]
    assert logs.dropped == 0
    assert writer.most_waiting <= 500


def test_a_producer_that_is_done_does_not_wait(monkeypatch) -> None:
    monkeypatch.setattr(run_logs, "MAX_PENDING", 10)
    monkeypatch.setattr(run_logs, "STALL_SECONDS", 30.0)
    release = threading.Event()
    stored: list[str] = []

    def write_logs(run_id, records, **numbered):
        release.wait(10)  # a server that does not answer yet
        stored.extend(r.message for r in records)

    writer = FlakyWriter(failures=0)
    writer.write_logs = write_logs  # type: ignore[method-assign]
    logs = RunLogs(writer, "r", attempt=1).start()
    done = threading.Event()
    done.set()
    started = time.monotonic()
    for i in range(100):  # a child that has exited: what is left in its pipe is queued at once
        logs.emit(f"line {i}", done=done)
    assert time.monotonic() - started < 1
    release.set()
    logs.close(timeout=10)
    assert stored == [f"line {i}" for i in range(100)]


def test_a_server_that_takes_no_batch_for_too_long_costs_lines_and_says_how_many(
    monkeypatch, caplog
) -> None:
    # Given a shipper that keeps 400 records and a server that hangs on the first batch
    monkeypatch.setattr(run_logs, "MAX_PENDING", 400)
    monkeypatch.setattr(run_logs, "STALL_SECONDS", 0.3)
    release = threading.Event()
    stored: list[str] = []

    def write_logs(run_id, records, **numbered):
        release.wait(10)
        stored.extend(r.message for r in records)

    writer = FlakyWriter(failures=0)
    writer.write_logs = write_logs  # type: ignore[method-assign]
    logs = RunLogs(writer, "r", attempt=1).start()
    # When 3,000 lines are emitted: the producer waits 0.3 s, then room comes from dropping
    for i in range(3_000):
        logs.emit(f"line {i}")
    release.set()
    logs.close(timeout=10)
    # Then the lines that arrived are in order, one line stands where the others are missing
    # with their exact count, and the worker's warning says the same
    lines = [m for m in stored if m.startswith("line ")]
    missing = 3_000 - len(lines)
    assert missing > 0
    assert logs.dropped == missing
    gap = f"[conveyor] {missing} log lines dropped while the server was unreachable"
    assert stored.count(gap) == 1
    at = stored.index(gap)
    assert stored[:at] == [f"line {i}" for i in range(at)]
    assert stored[at + 1 :] == [f"line {i}" for i in range(at + missing, 3_000)]
    assert f"count={missing}" in caplog.text
