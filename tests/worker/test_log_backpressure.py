"""A flow that prints faster than its logs can be shipped is slowed, not truncated; lines are
dropped only while the server is away, and then the run's log says how many."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import ServerUnavailable
from conveyor.schemas import Deployment, LogLine, LogRecord, RunState
from conveyor.settings import Settings
from conveyor.worker import logs as run_logs
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions

LINES = 20_000
PENDING = 2_000
"""The bound on waiting records in these tests (a tenth of the lines a flow prints)."""
GAP = re.compile(r"\[conveyor\] (\d+) log lines dropped while the server was unreachable")


@pytest.fixture(autouse=True)
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_logs, "MAX_PENDING", PENDING)


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


def deploy(settings: Settings, client: ConveyorClient, project: Path) -> Deployment:
    return from_source(project, "flows.py:chatty").deploy("test", settings=settings, client=client)


def work(settings: Settings, client: Any) -> int:
    options = WorkerOptions(pool="default", name="w1", lease_seconds=10.0, poll_seconds=0.2)
    return Worker.from_settings(settings, client, options).work(burst=True)


def all_logs(client: ConveyorClient, run_id: str) -> list[LogLine]:
    lines: list[LogLine] = []
    while page := client.read_logs(run_id, after=lines[-1].seq if lines else 0, limit=5000):
        lines.extend(page)
    return lines


def dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[int]:
    found = (re.search(r"logs dropped run=\S+ count=(\d+)", r.getMessage()) for r in caplog.records)
    return [int(m.group(1)) for m in found if m]


def test_every_line_of_a_fast_printing_flow_arrives_in_order(
    settings, client, project, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a flow that prints ten times more lines than the worker keeps waiting, at full speed
    deployment = deploy(settings, client, project)
    run = client.create_run(deployment.flow_name, deployment.name, parameters={"lines": LINES})
    # When a worker runs it against the embedded server
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        assert work(settings, client) == 0
    # Then the run completed and its log has every line, once, in order, and nothing was dropped
    assert client.get_run(run.id).state is RunState.COMPLETED
    logged = all_logs(client, run.id)
    stdout = [line.message for line in logged if line.stream == "stdout"]
    assert len(stdout) == LINES
    assert stdout == [f"line {i}" for i in range(LINES)]
    assert not [line.message for line in logged if GAP.search(line.message)]
    assert dropped_warnings(caplog) == []


class OutageClient:
    """The real client, but its log batches find the server away from the first batch until
    ``back`` is set."""

    def __init__(self, client: ConveyorClient) -> None:
        self._client = client
        self.back = threading.Event()
        self.refused = 0

    def write_logs(self, run_id: str, records: list[LogRecord], **numbered: Any) -> None:
        if not self.back.is_set():
            self.refused += 1
            raise ServerUnavailable("cannot reach http://127.0.0.1:9")
        self._client.write_logs(run_id, records, **numbered)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_lines_dropped_in_an_outage_are_counted_in_the_run_log(
    settings, client, project, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker whose log batches find the server away while its flow prints 20,000 lines
    deployment = deploy(settings, client, project)
    run = client.create_run(deployment.flow_name, deployment.name, parameters={"lines": LINES})
    outage = OutageClient(client)

    def end_outage() -> None:  # once the flow has printed everything (the pumps drop, not wait)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not outage.refused:
            time.sleep(0.05)
        time.sleep(1.5)
        outage.back.set()

    ender = threading.Thread(target=end_outage, daemon=True)
    ender.start()
    # When the worker runs it and the server comes back
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        assert work(settings, outage) == 0
    ender.join(30)
    # Then the run completed, the lines it has are in order, and one line in their place says
    # exactly how many are missing, as does the worker's warning
    assert client.get_run(run.id).state is RunState.COMPLETED
    logged = all_logs(client, run.id)
    stdout = [line.message for line in logged if line.stream == "stdout"]
    numbers = [int(m.removeprefix("line ")) for m in stdout]
    assert numbers == sorted(set(numbers))
    missing = LINES - len(stdout)
    assert missing > 0
    gaps = [
        (i, int(m.group(1))) for i, line in enumerate(logged) if (m := GAP.search(line.message))
    ]
    assert [count for _, count in gaps] == [missing]
    assert dropped_warnings(caplog) == [missing]
    # the line stands where the lines are missing
    at = gaps[0][0]
    before = [int(x.message.removeprefix("line ")) for x in logged[:at] if x.stream == "stdout"]
    after = [int(x.message.removeprefix("line ")) for x in logged[at:] if x.stream == "stdout"]
    assert (after[0] if after else LINES) - (before[-1] if before else -1) - 1 == missing
