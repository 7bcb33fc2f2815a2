"""What a `Flow` adds for code written against the first generation of flow orchestrators.

```python
from conveyor import Flow
from conveyor.storage import Local

with Flow("local-flow", storage=Local()) as flow:   # a graph of task calls (conveyor._graph)
    ...
flow.storage.build()                                # the flow was added to its storage
flow.register(project_name="etl", labels=["prod"]) # deployment local-flow/etl
state = flow.run()
```

- ``with flow:`` / `run`: the functional API (`conveyor._graph`);
- ``storage``, ``result``, ``environment``, ``run_config``: settable, as in the first generation
  (each is an option of the flow, so `Flow.with_options` copies keep them); assigning a
  storage adds the flow to it (`attach_to_storage`);
- `register`: builds the storage and creates or updates the deployment (`conveyor.storage`).

This mixin holds no state of its own: it reads and replaces the flow's `Options`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Self, cast

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor._graph import FlowRunState, Graph
    from conveyor.flows import Flow, Options
    from conveyor.schemas import Deployment

__all__ = ["FirstGenerationFlow", "attach_to_storage"]


class FirstGenerationFlow:
    """``with``, `run`, `register` and the settable first-generation attributes of a `Flow`."""

    _opts: Options
    _fn: Any

    @property
    def name(self) -> str:
        return self._opts.name

    def __enter__(self) -> Self:
        """``with Flow("name") as flow:``: task calls in the block build the flow's graph."""
        self._graph().enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._graph().exit()

    def _graph(self) -> Graph:
        from conveyor._graph import Graph

        if not isinstance(self._fn, Graph):
            raise ConfigError(
                f"flow {self.name!r} is a decorated function, not a graph",
                hint='use `with Flow("name") as flow:` to build a flow from task calls',
            )
        return self._fn

    def run(self, **parameters: Any) -> FlowRunState:
        """Run the flow in-process; its state (a failure is in the state, not raised)."""
        from conveyor._graph import FlowRunState

        call = cast(Callable[..., Any], self)
        try:
            value = call(**parameters)
        except Exception as exc:
            logging.getLogger("conveyor.flow_runs").exception("flow %r failed", self.name)
            return FlowRunState(error=exc)
        return FlowRunState(result=value)

    def register(
        self,
        project_name: str | None = None,
        build: bool = True,
        labels: list[str] | None = None,
        set_schedule_active: bool = True,
        version_group_id: str | None = None,
        no_url: bool = False,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Deployment | None:
        """Build the flow's storage and create or update the deployment ``<flow>/<project or
        "default">`` (see `conveyor.storage.register_flow`). While a flow file is being loaded
        (a worker, a preflight, ``conveyor register``) a module-level call does nothing: None.

        Prefect 1's ``set_schedule_active``, ``no_url`` and ``idempotency_key`` change nothing
        here (there are no schedules, no URL is printed, and registering an unchanged flow makes
        no new revision anyway); ``version_group_id`` is refused. Other keywords are the default
        storage's (``Local(**kwargs)``)."""
        from conveyor.storage import register_flow

        if version_group_id is not None:
            raise ConfigError(
                "register() version_group_id is not supported: a deployment is FLOW/PROJECT",
                hint="group a flow's versions under one project_name= instead",
            )

        flow = cast("Flow[..., Any]", self)
        return register_flow(
            flow, project_name=project_name, build=build, labels=labels or [], **kwargs
        )

    @property
    def storage(self) -> Any:
        """Where the first-generation API keeps this flow (``Flow("x", storage=Local())``)."""
        return self._opts.storage

    @storage.setter
    def storage(self, value: Any) -> None:
        self._opts = replace(self._opts, storage=value)
        attach_to_storage(self)

    @property
    def result(self) -> Any:
        """The first generation's name for ``result_storage`` (``result=LocalResult()``)."""
        return self._opts.result_storage

    @result.setter
    def result(self, value: Any) -> None:
        self._opts = replace(self._opts, result_storage=value)
        from conveyor._graph import Graph

        if isinstance(self._fn, Graph):
            self._fn.result = value

    @property
    def environment(self) -> Any:
        """The first generation's environment (``LocalEnvironment(metadata={"image": ...})``)."""
        return self._opts.environment

    @environment.setter
    def environment(self, value: Any) -> None:
        self._opts = replace(self._opts, environment=value)

    @property
    def run_config(self) -> Any:
        """How the flow's runs are configured (``DockerRun(image=...)``, `conveyor.run_configs`)."""
        return self._opts.run_config

    @run_config.setter
    def run_config(self, value: Any) -> None:
        self._opts = replace(self._opts, run_config=value)


def attach_to_storage(flow: Any) -> None:
    """Add ``flow`` to its storage (given as ``storage=`` or assigned) unless it is there.

    A second, different flow of the same name is the storage's name conflict.
    """
    storage = flow.storage
    add = getattr(storage, "add_flow", None)
    if callable(add) and getattr(storage, "_flows", {}).get(flow.name) is not flow:
        add(flow)
