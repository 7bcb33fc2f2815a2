"""Fixtures for the worker tests: the flow project, and running one child without a server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor.schemas import LogRecord
from conveyor.worker.executors import ChildJob, Executor, Interrupt, Outcome, ProcessExecutor
from conveyor.worker.logs import RunLogs
from conveyor.worker.workspace import Workspace
from worker.flows_project import write_project


class LogSink:
    """Stands in for the client's ``write_logs``: keeps every record, in order."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.lock = threading.Lock()

    def write_logs(self, run_id: str, records: list[LogRecord]) -> None:
        with self.lock:
            self.records.extend(records)

    def messages(self, stream: str | None = None) -> list[str]:
        return [r.message for r in self.records if stream is None or r.stream == stream]

    def text(self) -> str:
        return "\n".join(self.messages())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The test flow project (flows.py, helpers.py, data.txt)."""
    return write_project(tmp_path / "project")


ChildRunner = Callable[..., tuple[Outcome, LogSink, Workspace]]


@pytest.fixture
def run_child(project: Path, tmp_path: Path) -> ChildRunner:
    """Run one flow of the project in a real child process, as the worker does (no server)."""

    def run(
        function: str,
        parameters: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        interrupt: Interrupt | None = None,
        executor: Executor | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Outcome, LogSink, Workspace]:
        workspace = Workspace.create(tmp_path / "work", "run-1")
        workspace.fill(project)
        sink = LogSink()
        logs = RunLogs(sink, "run-1").start()
        job = ChildJob(
            run_id="run-1",
            entrypoint=f"flows.py:{function}",
            parameters=parameters or {},
            workspace=workspace.code,
            control=workspace.control,
            env=env or {},
            timeout_seconds=timeout,
        )
        outcome = (executor or ProcessExecutor(grace_seconds=1.0)).execute(
            job, logs=logs, interrupt=interrupt or Interrupt()
        )
        logs.close()
        return outcome, sink, workspace

    return run
