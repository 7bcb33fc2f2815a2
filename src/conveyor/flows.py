"""Flows and tasks: ``@flow`` and ``@task``, and loading a flow from an entrypoint.

```python
from conveyor import flow, task

@task(retries=2)
def fetch(n: int) -> list[int]: ...

@flow(log_prints=True, timeout_seconds=60)
def pipeline(n: int = 3) -> int:
    print("fetching")            # also a record on the ``conveyor.flow_runs`` logger
    return sum(fetch(n))

pipeline(n=5)                    # runs in-process: retries, timeout, log_prints applied
```

A decorated function keeps its signature for type checkers (``Flow[P, R]`` / ``Task[P, R]``) and
for `inspect.signature`. Calling a flow does not validate its arguments: it is a plain Python call
with the flow's policy around it (see `conveyor._running`). A run created from a deployment is
checked against the stored parameter schema (`validate_parameters`), and the worker converts the
values with `Flow.call_with_parameters`.

``async def`` functions may be decorated too: calling the flow returns a coroutine that applies
the same policy (``asyncio.timeout`` for the timeout).

`conveyor.load_flow` and the entrypoint forms live in `conveyor._loading` (which imports this
module, never the other way round); `Flow.from_source` and
`Flow.deploy` delegate to `conveyor.deploy`. Nothing heavy (pydantic, httpx) is imported here.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    ParamSpec,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from conveyor._classic import FirstGenerationFlow, attach_to_storage
from conveyor._graph import building
from conveyor._running import Delay, RunPolicy, call_async, call_sync
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.deploy import DeployableFlow
    from conveyor.schemas import Deployment
    from conveyor.sources.base import Source

__all__ = ["Flow", "FlowOptions", "Options", "Task", "TaskOptions", "flow", "task"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskOptions(TypedDict, total=False):
    """The options of ``@task(...)`` and ``Task.with_options(...)``."""

    name: str
    description: str
    retries: int
    retry_delay_seconds: Delay
    timeout_seconds: float | None
    log_prints: bool | None


class FlowOptions(TaskOptions, total=False):
    """The options of ``@flow(...)``, ``Flow(fn, ...)`` and ``Flow.with_options(...)``.

    ``storage`` (where the first-generation API keeps the flow), ``result_storage`` (where its
    non-JSON results go), ``environment`` and ``run_config`` (how the first-generation API runs
    it) are held here for the layers that use them.
    """

    version: str
    storage: Any
    result_storage: Any
    environment: Any
    run_config: Any


@dataclass(frozen=True)
class Options:
    """A flow's or task's options, checked once; `with_options` is `dataclasses.replace`."""

    name: str
    description: str | None = None
    version: str | None = None
    retries: int = 0
    retry_delay_seconds: float | tuple[float, ...] = 0.0
    timeout_seconds: float | None = None
    log_prints: bool | None = None
    storage: Any = None
    result_storage: Any = None
    environment: Any = None
    run_config: Any = None

    def policy(self, kind: str) -> RunPolicy:
        """What to do around one call (checked: a `ConfigError` names a bad option)."""
        return RunPolicy.checked(
            kind,
            self.name,
            retries=self.retries,
            retry_delay_seconds=self.retry_delay_seconds,
            timeout_seconds=self.timeout_seconds,
            log_prints=self.log_prints,
        )


_OPTION_NAMES = frozenset(f.name for f in fields(Options))


class _Decorated(Generic[P, R]):
    """What flows and tasks share: the function, its options, and the call policy."""

    _kind: ClassVar[str]
    _allowed: ClassVar[frozenset[str]] = frozenset(TaskOptions.__annotations__)

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        if not callable(fn):
            raise ConfigError(f"@{self._kind} expects a function, got {type(fn).__name__}")
        unknown = sorted(set(options) - self._allowed)
        if unknown:
            raise ConfigError(
                f"@{self._kind} got an unknown option {unknown[0]!r}",
                hint=f"it takes: {', '.join(sorted(self._allowed))}",
            )
        self._fn = fn
        name = options.get("name")
        if options.get("description") is None:
            options["description"] = _first_paragraph(fn)
        self._opts = Options(
            **{
                **{k: v for k, v in options.items() if v is not None or k == "log_prints"},
                "name": self._check_name(name if name is not None else self._default_name(fn)),
            }
        )
        self._check_options(self._opts)
        self._policy = self._opts.policy(self._kind)
        self._is_async = inspect.iscoroutinefunction(fn)
        self._scope: AbstractContextManager[object] | None = None
        # What functools.wraps would copy, so inspect.signature/getdoc/help see the function.
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__: str = getattr(fn, "__name__", self._opts.name)
        self.__qualname__: str = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", __name__)

    def _check_options(self, options: Options) -> None:
        """Checks beyond the call policy's (subclasses add theirs)."""

    @property
    def _name(self) -> str:
        return self._opts.name

    @property
    def options(self) -> Options:
        """Every option, as one frozen value."""
        return self._opts

    # --- read-only attributes -------------------------------------------------------------------
    @property
    def fn(self) -> Callable[P, R]:
        """The decorated function, undecorated."""
        return self._fn

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str | None:
        """Given, or the first paragraph of the docstring."""
        return self._opts.description

    @property
    def retries(self) -> int:
        return self._policy.retries

    @property
    def retry_delay_seconds(self) -> float | tuple[float, ...]:
        return self._policy.retry_delay_seconds

    @property
    def timeout_seconds(self) -> float | None:
        return self._policy.timeout_seconds

    @property
    def log_prints(self) -> bool | None:
        return self._policy.log_prints

    # --- calling --------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._is_async:
            return cast(R, self._call_async(args, kwargs))
        if self._scope is None:
            return call_sync(self._fn, args, kwargs, self._policy)
        with self._scope:
            return call_sync(self._fn, args, kwargs, self._policy)

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = cast(Callable[..., Any], self._fn)
        if self._scope is None:
            return await call_async(fn, args, kwargs, self._policy)
        with self._scope:
            return await call_async(fn, args, kwargs, self._policy)

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Any: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """Flows and tasks defined in a class body bind like methods."""
        getter = getattr(type(self._fn), "__get__", None)
        if instance is None or getter is None:
            return self
        return self._replace(fn=getter(self._fn, instance, owner))

    def _with_options(self, changes: Mapping[str, Any]) -> Self:
        return self._replace(**{k: v for k, v in changes.items() if v is not None})

    def _replace(self, **changes: Any) -> Self:
        unknown = sorted(set(changes) - self._allowed - {"fn"})
        if unknown:
            raise ConfigError(f"{self._kind} {self._name!r} has no option {unknown[0]!r}")
        fn = changes.pop("fn", self._fn)
        current = {f: getattr(self._opts, f) for f in _OPTION_NAMES if f in self._allowed}
        copy = type(self)(fn, **(current | changes))
        copy._scope = self._scope
        return copy

    def _entered(self) -> AbstractContextManager[object]:
        return self._scope if self._scope is not None else nullcontext()

    def _with_scope(self, scope: AbstractContextManager[object]) -> Self:
        """A copy that enters ``scope`` around every call (see `conveyor._loading`)."""
        copy = self._replace()
        copy._scope = scope
        return copy

    @classmethod
    def _default_name(cls, fn: Callable[..., Any]) -> str:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise ConfigError(f"@{cls._kind} cannot name {fn!r}", hint="pass name=...")
        return name

    def _check_name(self, name: str) -> str:
        from conveyor._names import check_name

        return check_name(name, what=f"{self._kind} name")

    def __repr__(self) -> str:
        target = f"{self.__module__}.{self.__qualname__}"
        return f"{type(self).__name__}(name={self._name!r}, fn={target})"


class Flow(FirstGenerationFlow, _Decorated[P, R]):
    """A function decorated with `flow`. Call it to run it in-process.

    ``Flow("name", storage=..., result=...)`` is the first generation's class style: a flow
    whose body is the graph of task calls made inside ``with flow:`` (see `conveyor._graph`).
    """

    _kind = "flow"
    _allowed = frozenset(FlowOptions.__annotations__)

    @overload
    def __init__(
        self: Flow[[], dict[str, Any]],
        fn: str,
        /,
        *,
        result: Any = None,
        **options: Unpack[FlowOptions],
    ) -> None: ...

    @overload
    def __init__(self, fn: Callable[P, R], /, **options: Unpack[FlowOptions]) -> None: ...

    def __init__(self, fn: Any, /, result: Any = None, **options: Any) -> None:
        graph = None
        if isinstance(fn, str):  # Flow("name", ...): the first generation's class style
            from conveyor._graph import Graph

            if options.pop("schedule", None) is not None:
                raise ConfigError(
                    f"Flow {fn!r}: schedule is not supported by Conveyor: it has no schedules",
                    hint="start runs with `conveyor run` or the API (from cron or a scheduler)",
                )
            unknown = sorted(set(options) - self._allowed - {"name"})
            if unknown:  # executor=, state_handlers=, ...: said of Flow(), not of @flow
                raise ConfigError(
                    f"Flow {fn!r}: Flow() got an unknown option {unknown[0]!r}",
                    hint=f"it takes: {', '.join(sorted(self._allowed | {'result'}))}",
                )
            graph = Graph(self._check_name(fn))
            graph.__module__ = sys._getframe(1).f_globals.get("__name__", "__main__")
            fn, options["name"] = graph, fn
            if result is not None:
                options["result_storage"] = result
        elif result is not None:
            raise ConfigError(
                "result= is for Flow('name', ...)", hint="a decorated flow takes result_storage="
            )
        super().__init__(fn, **options)
        if graph is not None:
            graph.result = self.result_storage
            attach_to_storage(self)

    def _check_options(self, options: Options) -> None:
        version = options.version
        if version is not None and (not isinstance(version, str) or not version):
            raise ConfigError(f"flow {options.name!r}: version must be a non-empty string")

    @property
    def version(self) -> str | None:
        return self._opts.version

    @property
    def result_storage(self) -> Any:
        """Where this flow's results that are not JSON go (a URL or a result store)."""
        return self._opts.result_storage

    def with_options(self, **changes: Unpack[FlowOptions]) -> Self:
        """A copy with some options changed (``None`` keeps the current value)."""
        return self._with_options(changes)

    @classmethod
    def _default_name(cls, fn: Callable[..., Any]) -> str:
        return super()._default_name(fn).replace("_", "-")

    # --- parameters -----------------------------------------------------------------------------
    def parameter_schema(self) -> dict[str, Any]:
        """The JSON Schema of the flow's parameters (see `conveyor._params`)."""
        from conveyor._params import parameter_schema

        with self._entered():
            return parameter_schema(self._fn)

    def validate_parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check JSON ``params`` against the schema; a one-line `ConfigError` names the problem."""
        from conveyor._params import validate_parameters

        return validate_parameters(self.parameter_schema(), params)

    def bind_parameters(self, params: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Call arguments from JSON ``params``, converted to the declared types; a one-line
        `ConfigError` names a parameter that does not convert (nothing of the flow runs)."""
        from conveyor._params import bind_parameters, coerce_parameters

        with self._entered():  # the declared types may live in the flow's sibling modules
            return bind_parameters(self._fn, coerce_parameters(self._fn, params))

    def call_with_parameters(self, params: Mapping[str, Any]) -> R:
        """Run the flow with JSON ``params``: converted to the declared types, then bound."""
        args, kwargs = self.bind_parameters(params)
        call = cast(Callable[..., R], self)
        return call(*args, **kwargs)

    # --- deployment (implemented in conveyor.deploy) --------------------------------------------
    @classmethod
    def from_source(
        cls, source: Source | str | os.PathLike[str], entrypoint: str, **options: Any
    ) -> DeployableFlow:
        """The flow at ``entrypoint`` in ``source`` (a `Source`, a folder or a URL), ready to
        ``.deploy(...)``; ``options`` go to the source (``branch=``, ``credentials=``)."""
        from conveyor.deploy import from_source

        return from_source(source, entrypoint, **options)

    def deploy(self, name: str, **kwargs: Any) -> Deployment:
        """Create or update the deployment ``name`` of this flow (see `conveyor.deploy`)."""
        from conveyor.deploy import deploy_flow

        return deploy_flow(self, name=name, **kwargs)


class Task(_Decorated[P, R]):
    """A function decorated with `task`: a step of a flow with its own retries and timeout.

    Inside ``with Flow("name"):`` a call records the task in the flow's graph and returns a
    placeholder for its result (see `conveyor._graph`) instead of running it.
    """

    _kind = "task"

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        super().__init__(fn, **options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        graph = building()
        if graph is not None:
            return cast(R, graph.add(self, args, dict(kwargs)))
        return super().__call__(*args, **kwargs)

    def with_options(self, **changes: Unpack[TaskOptions]) -> Self:
        """A copy with some options changed (``None`` keeps the current value)."""
        return self._with_options(changes)


class _FlowDecorator:
    """``@flow`` / ``@flow(...)``, and ``flow.from_source(source, entrypoint)``."""

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Flow[P, R]: ...

    @overload
    def __call__(
        self, fn: None = None, /, **options: Unpack[FlowOptions]
    ) -> Callable[[Callable[P, R]], Flow[P, R]]: ...

    def __call__(
        self, fn: Callable[P, R] | None = None, /, **options: Unpack[FlowOptions]
    ) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
        def decorate(function: Callable[P, R]) -> Flow[P, R]:
            made = Flow(function, **options)
            attach_to_storage(made)
            return made

        return decorate if fn is None else decorate(fn)

    def from_source(
        self, source: Source | str | os.PathLike[str], entrypoint: str, **options: Any
    ) -> DeployableFlow:
        """Same as `Flow.from_source`: ``flow.from_source("./project", "flows.py:hello")``."""
        return Flow.from_source(source, entrypoint, **options)

    def __repr__(self) -> str:
        return "<conveyor.flow decorator>"


flow = _FlowDecorator()


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None, /, **options: Unpack[TaskOptions]
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptions]
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` / ``@task(...)``: retries, timeout and log_prints for one step of a flow."""

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        return Task(function, **options)

    return decorate if fn is None else decorate(fn)


def _first_paragraph(fn: Callable[..., Any]) -> str | None:
    doc = getattr(fn, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
