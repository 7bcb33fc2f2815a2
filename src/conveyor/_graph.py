"""The functional API of the first generation: a flow whose body is a graph of task calls.

```python
from conveyor import Flow, task

@task
def numbers() -> list[int]: return [1, 2, 3]

@task
def total(xs: list[int]) -> int: return sum(xs)

with Flow("sums") as flow:          # calling tasks here builds the graph, it runs nothing
    total(numbers())

state = flow.run()                  # runs every task once, in dependency order
state.result["total"]               # 6
```

Inside ``with flow:`` a task call records a node and returns a `TaskRef`, a placeholder for its
future result; passing a ref (anywhere in the arguments, inside lists, tuples, sets and dicts
too) or ``upstream_tasks=[ref_or_task, ...]`` makes an edge. Calling the flow — what a worker
does, and what `run` does — runs the nodes in dependency order (ties keep call order), each
under its task's own retries and timeout, with the refs replaced by the results; it returns
``{task key: result}`` (the key is the task's name, ``name-2``, ``name-3``... for later calls
of the same task). A flow given a ``result`` (``LocalResult``) also persists every task's result
through it. A failing task fails the flow: the tasks after it do not run.

The graph is the flow's function (`Graph`), so a graph flow is an ordinary `Flow`: it pickles
with its tasks, deploys, and runs in a worker's child like any other.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor._running import RUN_LOGGER_NAME
from conveyor.errors import ConfigError

__all__ = ["FlowRunState", "Graph", "Node", "TaskRef", "building"]

run_logger = logging.getLogger(RUN_LOGGER_NAME)

_BUILDING: contextvars.ContextVar[Graph | None] = contextvars.ContextVar(
    "conveyor_graph", default=None
)


def building() -> Graph | None:
    """The graph being built by a ``with flow:`` block around this call, if any."""
    return _BUILDING.get()


@dataclass(frozen=True)
class TaskRef:
    """The future result of one task call in a graph (what the call returns while building)."""

    graph_name: str
    index: int
    key: str

    def __repr__(self) -> str:
        return f"<result of task {self.key!r} in flow {self.graph_name!r}>"


@dataclass(frozen=True)
class Node:
    """One task call: the task, its arguments (refs inside), and the nodes it waits for."""

    key: str
    task: Any
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    upstream: tuple[int, ...] = ()


@dataclass
class FlowRunState:
    """What ``flow.run()`` returns: the results by task key, or the error that ended the run."""

    result: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    def is_successful(self) -> bool:
        return self.error is None

    def is_failed(self) -> bool:
        return self.error is not None

    def __repr__(self) -> str:
        if self.error is None:
            return f"<FlowRunState success: {len(self.result)} tasks>"
        return f"<FlowRunState failed: {type(self.error).__name__}: {self.error}>"


class Graph:
    """The body of ``Flow("name")``: task calls recorded inside ``with flow:``.

    ``result`` (a result with ``write(value, *, key)``, e.g. ``LocalResult``) persists each
    task's result; the flow sets it from its own ``result``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self.result: Any = None
        self.__doc__ = None  # the flow's description is not this class's docstring
        self.__name__ = name
        self.__qualname__ = name
        self._tokens: list[contextvars.Token[Graph | None]] = []

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = []
        return state

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, tasks={[n.key for n in self.nodes]})"

    # --- building -------------------------------------------------------------------------------

    def enter(self) -> None:
        """Start recording task calls (``with flow:``)."""
        self._tokens.append(_BUILDING.set(self))

    def exit(self) -> None:
        _BUILDING.reset(self._tokens.pop())

    def add(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskRef:
        """Record ``task(*args, **kwargs)``; its ref."""
        upstream_given = kwargs.pop("upstream_tasks", None) or ()
        if not isinstance(upstream_given, Iterable) or isinstance(upstream_given, str):
            raise ConfigError(f"upstream_tasks of task {task.name!r} must be a list of tasks")
        upstream = {ref.index for ref in _refs((args, kwargs)) if self._owns(ref, task)}
        for item in upstream_given:
            upstream.add(self._index_of(item, task))
        taken = sum(1 for node in self.nodes if node.task.name == task.name)
        key = task.name if taken == 0 else f"{task.name}-{taken + 1}"
        self.nodes.append(Node(key, task, tuple(args), dict(kwargs), tuple(sorted(upstream))))
        return TaskRef(self.name, len(self.nodes) - 1, key)

    def _owns(self, ref: TaskRef, task: Any) -> bool:
        if ref.graph_name != self.name or ref.index >= len(self.nodes):
            raise ConfigError(
                f"task {task.name!r} was given the result of {ref.key!r} from another flow",
                hint="pass results only between tasks of the same `with Flow(...)` block",
            )
        return True

    def _index_of(self, item: Any, task: Any) -> int:
        if isinstance(item, TaskRef) and self._owns(item, task):
            return item.index
        for index in range(len(self.nodes) - 1, -1, -1):
            if self.nodes[index].task is item:
                return index
        raise ConfigError(
            f"upstream task {getattr(item, 'name', item)!r} of {task.name!r} is not in flow "
            f"{self.name!r}",
            hint="call the upstream task inside the same `with Flow(...)` block first",
        )

    @property
    def tasks(self) -> list[Any]:
        """Every task of the graph, once each, in call order."""
        seen: dict[int, Any] = {}
        for node in self.nodes:
            seen.setdefault(id(node.task), node.task)
        return list(seen.values())

    def order(self) -> list[int]:
        """Node indexes in dependency order (Kahn's algorithm; ties keep call order)."""
        waiting = {i: set(node.upstream) for i, node in enumerate(self.nodes)}
        done: list[int] = []
        while waiting:
            ready = [i for i, needs in waiting.items() if not needs]
            if not ready:  # pragma: no cover - refs only point backwards, so no cycle is possible
                raise ConfigError(f"flow {self.name!r} has a dependency cycle")
            first = min(ready)
            done.append(first)
            del waiting[first]
            for needs in waiting.values():
                needs.discard(first)
        return done

    # --- running --------------------------------------------------------------------------------

    def __call__(self) -> dict[str, Any]:
        """Run every task once, in dependency order; ``{task key: result}``."""
        if _BUILDING.get() is self:
            raise ConfigError(
                f"flow {self.name!r} cannot run inside its own `with` block",
                hint="call flow.run() after the block",
            )
        results: dict[int, Any] = {}
        for index in self.order():
            node = self.nodes[index]
            args = tuple(_substitute(a, results) for a in node.args)
            kwargs = {k: _substitute(v, results) for k, v in node.kwargs.items()}
            value = node.task(*args, **kwargs)
            results[index] = value
            if self.result is not None:
                location = self.result.write(value, key=f"{self.name}/{node.key}")
                run_logger.info("task %r finished; result written to %s", node.key, location)
            else:
                run_logger.info("task %r finished", node.key)
        return {self.nodes[i].key: value for i, value in results.items()}


def _refs(value: Any) -> Iterable[TaskRef]:
    if isinstance(value, TaskRef):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _refs(item)


def _substitute(value: Any, results: Mapping[int, Any]) -> Any:
    if isinstance(value, TaskRef):
        return results[value.index]
    if isinstance(value, Mapping):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_substitute(v, results) for v in value)
    return value
