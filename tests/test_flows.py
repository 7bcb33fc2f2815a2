"""@flow and @task: options, signatures, retries, log_prints, timeouts, delegation to deploy."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import itertools
import logging
import sys
import threading
import time
import types
from typing import Any

import pytest

from conveyor import Flow, Task, flow, task
from conveyor.errors import ConfigError, FlowTimeout

RUN_LOGGER = "conveyor.flow_runs"


def add(x: int, y: int = 2, *, scale: float = 1.0) -> float:
    """Add two numbers.

    Then scale them.
    """
    return (x + y) * scale


# --- decorating -----------------------------------------------------------------------------------


def test_bare_decorator_keeps_function_and_signature() -> None:
    f = flow(add)

    assert isinstance(f, Flow)
    assert f.fn is add
    assert f(1) == 3.0
    assert f(1, 3, scale=2) == 8.0
    assert inspect.signature(f) == inspect.signature(add)
    assert f.__name__ == "add"
    assert f.__doc__ == add.__doc__


def test_flow_defaults_name_with_dashes_and_description_from_docstring() -> None:
    @flow
    def load_the_data() -> None:
        """Load the data
        from somewhere.

        Details nobody reads.
        """

    assert load_the_data.name == "load-the-data"
    assert load_the_data.description == "Load the data from somewhere."
    assert load_the_data.version is None
    assert load_the_data.retries == 0
    assert load_the_data.timeout_seconds is None
    assert load_the_data.log_prints is None


def test_decorator_with_options_sets_read_only_attributes() -> None:
    @flow(
        name="etl",
        description="given",
        version="7",
        retries=2,
        retry_delay_seconds=[1, 2],
        log_prints=True,
        timeout_seconds=30,
    )
    def pipeline() -> int:
        """Ignored docstring."""
        return 1

    assert (pipeline.name, pipeline.description, pipeline.version) == ("etl", "given", "7")
    assert pipeline.retries == 2
    assert pipeline.retry_delay_seconds == (1.0, 2.0)
    assert pipeline.timeout_seconds == 30.0
    assert pipeline.log_prints is True
    with pytest.raises(AttributeError):
        pipeline.name = "other"  # type: ignore[misc]


def test_task_keeps_function_name_and_signature() -> None:
    @task(retries=1, timeout_seconds=5)
    def fetch_rows(n: int) -> list[int]:
        return list(range(n))

    assert isinstance(fetch_rows, Task)
    assert fetch_rows.name == "fetch_rows"
    assert fetch_rows.retries == 1
    assert inspect.signature(fetch_rows) == inspect.signature(fetch_rows.fn)
    assert fetch_rows(3) == [0, 1, 2]
    assert repr(fetch_rows).startswith("Task(name='fetch_rows'")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, "retries must be a whole number >= 0"),
        ({"retry_delay_seconds": -2}, "retry_delay_seconds must be seconds >= 0"),
        ({"retry_delay_seconds": [1, "x"]}, "retry_delay_seconds must be seconds >= 0"),
        ({"timeout_seconds": 0}, "timeout_seconds must be > 0, got 0"),
        ({"name": "a/b"}, "flow name 'a/b' is not valid"),
        ({"name": ""}, "flow name '' is not valid"),
        ({"version": ""}, "version must be a non-empty string"),
    ],
)
def test_bad_options_are_refused_at_decoration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        flow(**options)(add)


def test_with_options_returns_a_changed_copy() -> None:
    f = flow(add)
    g = f.with_options(name="other", retries=3)

    assert (g.name, g.retries, g.fn) == ("other", 3, add)
    assert (f.name, f.retries) == ("add", 0)


def test_flows_and_tasks_bind_as_methods_in_a_class() -> None:
    class Pipeline:
        factor = 10

        @flow
        def run(self, x: int) -> int:
            return x * self.factor

        @staticmethod
        @flow
        def static(x: int) -> int:
            return x + 1

        @classmethod
        @flow
        def klass(cls, x: int) -> str:
            return f"{cls.__name__}:{x}"

    assert Pipeline().run(2) == 20
    assert Pipeline.static(1) == 2
    assert Pipeline.klass(3) == "Pipeline:3"
    assert list(inspect.signature(Pipeline().run).parameters) == ["x"]


# --- retries --------------------------------------------------------------------------------------


def test_retries_until_success_and_counts_attempts(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    @flow(retries=3)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ValueError("not yet")
        return "ok"

    with caplog.at_level(logging.WARNING, logger=RUN_LOGGER):
        assert flaky() == "ok"

    assert len(attempts) == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER]
    assert warnings == [
        "flow attempt failed name=flaky attempt=1/4 retry_in=0s error=ValueError",
        "flow attempt failed name=flaky attempt=2/4 retry_in=0s error=ValueError",
    ]


def test_retries_exhausted_raises_the_last_error() -> None:
    attempts: list[int] = []

    @task(retries=2)
    def always_fails() -> None:
        attempts.append(1)
        raise RuntimeError(f"failure {len(attempts)}")

    with pytest.raises(RuntimeError, match="failure 3"):
        always_fails()
    assert len(attempts) == 3


def test_retry_delay_is_slept_between_attempts() -> None:
    stamps: list[float] = []

    @flow(retries=2, retry_delay_seconds=[0.1, 0.2])
    def flaky() -> None:
        stamps.append(time.monotonic())
        raise ValueError

    with pytest.raises(ValueError):
        flaky()

    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 2
    assert 0.1 <= gaps[0] < 0.5
    assert 0.2 <= gaps[1] < 0.6


def test_keyboard_interrupt_is_not_retried() -> None:
    attempts: list[int] = []

    @flow(retries=5)
    def interrupted() -> None:
        attempts.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert attempts == [1]


def test_task_inside_flow_retries_on_its_own() -> None:
    task_attempts: list[int] = []
    flow_attempts: list[int] = []

    @task(retries=2)
    def step(x: int) -> int:
        task_attempts.append(x)
        if len(task_attempts) < 2:
            raise ConnectionError
        return x * 2

    @flow
    def outer(x: int) -> int:
        flow_attempts.append(x)
        return step(x) + 1

    assert outer(5) == 11
    assert (len(task_attempts), len(flow_attempts)) == (2, 1)


# --- log_prints -----------------------------------------------------------------------------------


def test_log_prints_sends_lines_to_the_run_logger(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a log_prints flow that prints whole lines, split lines, and calls a task that prints
    @task
    def inner() -> None:
        print("from the task")

    @flow(log_prints=True)
    def chatty() -> int:
        print("line one")
        print("part", end="")
        print(" two")
        inner()
        print("no newline at the end", end="")
        return 1

    # When it runs
    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        assert chatty() == 1

    # Then every line is a record on the run logger, and nothing reaches stdout
    lines = [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER]
    assert lines == ["line one", "part two", "from the task", "no newline at the end"]
    assert capsys.readouterr().out == ""
    assert sys.stdout is not None
    assert type(sys.stdout).__name__ != "_PrintLogger"


def test_task_with_log_prints_false_prints_to_real_stdout(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    @task(log_prints=False)
    def raw() -> None:
        print("raw output")

    @flow(log_prints=True)
    def outer() -> None:
        print("logged")
        raw()

    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        outer()

    assert [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER] == ["logged"]
    assert capsys.readouterr().out == "raw output\n"


def test_without_log_prints_print_is_untouched(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow
    def plain() -> None:
        print("plain")

    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        plain()

    assert capsys.readouterr().out == "plain\n"
    assert not [r for r in caplog.records if r.name == RUN_LOGGER]


# --- timeouts (in-process: pytest-timeout owns SIGALRM here, so the thread fallback runs; the
# signal-based path is proven in test_flows_process.py in a fresh process) -------------------------


def test_timeout_raises_a_clear_error_on_time() -> None:
    @flow(timeout_seconds=0.2)
    def sleepy() -> None:
        time.sleep(3)

    started = time.monotonic()
    with pytest.raises(FlowTimeout) as caught:
        sleepy()

    assert time.monotonic() - started < 2.5  # the 3 s sleep was cut short
    assert str(caught.value) == "flow 'sleepy' timed out after 0.2s"
    assert caught.value.hint == "raise timeout_seconds on the flow, or make it faster"
    assert isinstance(caught.value, TimeoutError)


def test_timeout_from_another_thread_uses_the_thread_fallback() -> None:
    # Given tasks with timeouts, called from a thread that is not the main one
    @task(timeout_seconds=0.2)
    def sleepy() -> None:
        time.sleep(3)

    @task(timeout_seconds=2)
    def quick(x: int) -> int:
        return x + 1

    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["quick"] = quick(1)
        try:
            sleepy()
        except FlowTimeout as exc:
            outcome["error"] = str(exc)

    # When one finishes in time and one does not
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)

    # Then the slow one times out on time and the quick one returns
    assert outcome == {"quick": 2, "error": "task 'sleepy' timed out after 0.2s"}


def test_timeout_is_retried_like_any_failure() -> None:
    attempts: list[int] = []

    @flow(timeout_seconds=0.2, retries=1)
    def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(2)
        return "done"

    assert slow_then_fast() == "done"
    assert len(attempts) == 2


def test_a_function_that_raises_within_its_timeout_raises_its_own_error() -> None:
    @flow(timeout_seconds=2)
    def broken() -> None:
        raise LookupError("mine")

    with pytest.raises(LookupError, match="mine"):
        broken()


# --- async ----------------------------------------------------------------------------------------


def test_async_flow_retries_and_returns() -> None:
    attempts: list[int] = []

    @flow(retries=1, retry_delay_seconds=0.01)
    async def fetch(n: int) -> int:
        attempts.append(n)
        await asyncio.sleep(0)
        if len(attempts) == 1:
            raise ValueError
        return n * 2

    assert inspect.iscoroutinefunction(fetch.fn)
    assert asyncio.run(fetch(4)) == 8
    assert attempts == [4, 4]


def test_async_flow_timeout() -> None:
    @flow(timeout_seconds=0.1)
    async def stuck() -> None:
        await asyncio.sleep(5)

    with pytest.raises(FlowTimeout, match=r"flow 'stuck' timed out after 0\.1s"):
        asyncio.run(stuck())


# --- deploy delegation ----------------------------------------------------------------------------


@pytest.fixture
def fake_deploy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    calls: list[tuple[str, Any, Any]] = []
    module = types.ModuleType("conveyor.deploy")

    def from_source(source: Any, entrypoint: str, **options: Any) -> str:
        calls.append(("from_source", source, (entrypoint, options)))
        return "deployable"

    def deploy_flow(target: Any, **kwargs: Any) -> str:
        calls.append(("deploy_flow", target, kwargs))
        return "deployment"

    module.from_source = from_source  # type: ignore[attr-defined]
    module.deploy_flow = deploy_flow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "conveyor.deploy", module)
    return calls


def test_from_source_and_deploy_delegate_to_the_deploy_module(
    fake_deploy: list[tuple[str, Any, Any]],
) -> None:
    f = flow(add)

    assert flow.from_source("./project", "flows.py:add") == "deployable"
    assert Flow.from_source("git@host:repo.git", "a.py:b", branch="dev") == "deployable"
    assert f.deploy("nightly", work_pool="default", parameters={"x": 1}) == "deployment"

    assert fake_deploy == [
        ("from_source", "./project", ("flows.py:add", {})),
        ("from_source", "git@host:repo.git", ("a.py:b", {"branch": "dev"})),
        ("deploy_flow", f, {"name": "nightly", "work_pool": "default", "parameters": {"x": 1}}),
    ]


def test_call_with_parameters_converts_json_values() -> None:
    @flow
    def report(day: datetime.date, /, n: int = 1, *, tags: list[str] | None = None) -> str:
        return f"{day.isoformat()} {n} {tags}"

    assert report.call_with_parameters({"day": "2024-02-29", "n": 3}) == "2024-02-29 3 None"
    with pytest.raises(ConfigError, match="missing required parameter 'day'"):
        report.call_with_parameters({})


def test_options_live_in_one_frozen_value_and_with_options_replaces_it() -> None:
    import dataclasses

    from conveyor.flows import Options

    @flow(retries=2, storage="s3://bucket/flows", result_storage="file:///tmp/results")
    def stored() -> int:
        return 1

    assert isinstance(stored.options, Options)
    assert stored.storage == "s3://bucket/flows"
    assert stored.result_storage == "file:///tmp/results"
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.options.retries = 5  # type: ignore[misc]
    changed = stored.with_options(retries=0, name="renamed")
    assert (changed.retries, changed.name, changed.storage) == (0, "renamed", "s3://bucket/flows")
    assert stored.retries == 2


def test_an_unknown_option_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown option 'retry'") as caught:
        flow(retry=3)(lambda: None)  # type: ignore[call-overload]
    assert caught.value.hint is not None
    assert "retries" in caught.value.hint
    with pytest.raises(ConfigError, match="unknown option 'storage'"):
        task(storage="x")(lambda: None)  # type: ignore[call-overload]
