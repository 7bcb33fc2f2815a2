"""The first generation's functional API: calling tasks inside ``with Flow("name"):`` builds a
graph; ``flow.run()`` runs it in dependency order, each task under its own policy."""

from __future__ import annotations

import cloudpickle
import pytest

from conveyor import Flow, flow, task
from conveyor.errors import ConfigError


def test_calls_inside_the_block_build_a_graph_that_run_executes_in_dependency_order() -> None:
    calls: list[str] = []

    @task
    def numbers() -> list[int]:
        calls.append("numbers")
        return [1, 2, 3]

    @task
    def scale(xs: list[int], factor: int) -> list[int]:
        calls.append(f"scale x{factor}")
        return [x * factor for x in xs]

    @task
    def total(parts: dict[str, list[int]]) -> int:
        calls.append("total")
        return sum(sum(v) for v in parts.values())

    with Flow("sums") as graph_flow:
        xs = numbers()
        doubled = scale(xs, 2)
        tripled = scale(xs, factor=3)
        total({"a": doubled, "b": tripled})

    assert calls == []  # building runs nothing
    state = graph_flow.run()
    assert state.is_successful()
    assert calls == ["numbers", "scale x2", "scale x3", "total"]
    assert state.result == {
        "numbers": [1, 2, 3],
        "scale": [2, 4, 6],
        "scale-2": [3, 6, 9],
        "total": 30,
    }
    # Calling the flow is what a worker does: the same results as a dict
    assert graph_flow() == state.result
    assert graph_flow.parameter_schema()["properties"] == {}


def test_upstream_tasks_order_tasks_without_passing_data() -> None:
    order: list[str] = []

    @task
    def first() -> None:
        order.append("first")

    @task
    def second() -> None:
        order.append("second")

    with pytest.raises(ConfigError, match="upstream task 'first' of 'second' is not in flow"):
        with Flow("ordered"):
            second(upstream_tasks=[first])  # first was never called in this flow
    with Flow("ordered-2") as again:
        one = first()
        second(upstream_tasks=[one])
    again.run()
    assert order == ["first", "second"]


def test_a_failing_task_fails_the_run_and_stops_what_follows() -> None:
    ran: list[str] = []

    @task(retries=1)
    def flaky() -> int:
        ran.append("flaky")
        raise ValueError("no data")

    @task
    def after(x: int) -> int:
        ran.append("after")
        return x

    with Flow("failing") as graph_flow:
        after(flaky())
    state = graph_flow.run()
    assert state.is_failed()
    assert isinstance(state.error, ValueError)
    assert ran == ["flaky", "flaky"]  # the task's own retry, then the run stopped
    with pytest.raises(ValueError, match="no data"):
        graph_flow()


def test_tasks_outside_a_block_run_at_once_and_decorated_flows_have_no_block() -> None:
    @task
    def plus_one(x: int) -> int:
        return x + 1

    assert plus_one(1) == 2

    @flow
    def plain() -> int:
        return plus_one(41)

    assert plain() == 42
    with pytest.raises(ConfigError, match="is a decorated function, not a graph"):
        with plain:
            pass


def test_results_from_another_flow_are_refused() -> None:
    @task
    def one() -> int:
        return 1

    @task
    def ident(x: int) -> int:
        return x

    with Flow("a"):
        ref = one()
    with pytest.raises(ConfigError, match="from another flow"), Flow("b"):
        ident(ref)


def test_a_graph_flow_pickles_with_its_tasks_and_keeps_its_options() -> None:
    namespace: dict[str, object] = {"__name__": "not_importable"}
    exec(
        "from conveyor import Flow, task\n"
        "@task\n"
        "def hello(name: str) -> str:\n"
        "    return 'hello ' + name\n"
        "with Flow('greeting', retries=2, description='Say hello.') as flow:\n"
        "    hello('ada')\n",
        namespace,
    )
    original = namespace["flow"]
    copy = cloudpickle.loads(cloudpickle.dumps(original))
    assert copy.name == "greeting"
    assert copy.retries == 2
    assert copy.description == "Say hello."
    assert copy.run().result == {"hello": "hello ada"}
    assert copy.with_options(retries=0).run().result == {"hello": "hello ada"}


def test_flow_name_is_checked_and_result_only_fits_the_class_style() -> None:
    with pytest.raises(ConfigError, match="flow name 'a/b' is not valid"):
        Flow("a/b")
    with pytest.raises(ConfigError, match="result= is for Flow"):
        Flow(lambda: None, result=object())  # type: ignore[call-overload]
