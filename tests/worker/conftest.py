"""Fixtures for the worker tests: the flow project, and running one child without a server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.schemas import LogRecord
from conveyor.worker.executors import Interrupt, Outcome, RunSpec
from conveyor.worker.executors.local import LocalExecutor, ProcessExecutor
from conveyor.worker.logs import RunLogs
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


ChildRunner = Callable[..., tuple[Outcome, LogSink, Mapping[str, float]]]


@pytest.fixture
def run_child(project: Path, tmp_path: Path) -> Iterator[ChildRunner]:
    """Run one flow of the project through a real executor (the code comes from a code cache,
    the flow runs in a real child process), as the worker does, without a server. The run's
    files (a pickled result) stay until the test ends."""
    stack = ExitStack()
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    source = {"kind": "local", "path": str(project)}
    version = compute_version(project)

    def run(
        function: str,
        parameters: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        interrupt: Interrupt | None = None,
        executor: type[LocalExecutor] | None = None,
        env: dict[str, str] | None = None,
        pull_steps: list[dict[str, Any]] | None = None,
    ) -> tuple[Outcome, LogSink, Mapping[str, float]]:
        sink = LogSink()
        logs = RunLogs(sink, "run-1").start()
        spec = RunSpec(
            run_id="run-1",
            entrypoint=f"flows.py:{function}",
            parameters=parameters or {},
            source=source,
            version=version,
            pull_steps=tuple(pull_steps or ()),
            env=env or {},
            timeout_seconds=timeout,
        )
        chosen = (executor or ProcessExecutor)(
            cache=cache, work_dir=tmp_path / "work", spares=False, grace_seconds=1.0
        )
        started: dict[str, float] = {}

        def ready(timings: Mapping[str, float]) -> bool:
            started.update(timings)
            return True

        outcome = stack.enter_context(
            chosen.run(spec, logs=logs, interrupt=interrupt or Interrupt(), started=ready)
        )
        logs.close()
        return outcome, sink, started

    yield run
    stack.close()
