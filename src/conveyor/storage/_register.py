"""Registering first-generation flows: ``flow.register()`` and ``conveyor register``.

`register_flow` does what Prefect 1's registration did, through Conveyor's one deploy path:

1. a flow without storage gets ``Local(**storage_kwargs)`` (``conveyor register --path`` gives
   ``Local(path=<script>, stored_as_script=True)`` instead); the flow is added to its storage;
2. a flow without a result gets its storage's (``LocalResult`` for `Local`);
3. the storage is built (``build=False`` skips it: what was stored already is used);
4. the storage names the source and entrypoint of the flow (`Storage.deployment_source`) — a
   git commit resolved now, or the digest of the stored file, checked against what `build`
   stored — and `conveyor.deploy.DeployableFlow.deploy` resolves, preflights (the flow is loaded
   from that source in a child interpreter) and puts the deployment ``<flow>/<project or
   "default">``;
5. job variables: the storage's (`Docker`: the image), then the environment's and the run
   config's (``image``, ``env``, ``labels``), the storage's run environment (every secret as
   ``env: {NAME: "${NAME}"}``, resolved on the worker; only the name is stored), and the
   labels: the ones given, the storage's (`Local`: the host name) and the run config's — a
   run is claimed only by a worker carrying all of them.

While a flow file is being loaded (a worker's child, a preflight, ``conveyor register`` itself)
a module-level ``flow.register()`` does nothing and returns None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor._context import is_loading
from conveyor._names import check_labels
from conveyor.errors import ConfigError
from conveyor.storage._session import Session, session

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.flows import Flow
    from conveyor.schemas import Deployment
    from conveyor.settings import Settings
    from conveyor.storage.base import Storage

__all__ = [
    "job_variables_for",
    "load_flows_from_module",
    "load_flows_from_script",
    "register_flow",
    "register_flows",
]

logger = logging.getLogger(__name__)


def register_flow(
    flow: Flow[..., Any],
    *,
    project_name: str | None = None,
    build: bool = True,
    labels: Sequence[str] = (),
    work_pool: str = "default",
    settings: Settings | None = None,
    client: ConveyorClient | None = None,
    notify: Callable[[str], None] | None = None,
    namespace: Mapping[str, Any] | None = None,
    **storage_kwargs: Any,
) -> Deployment | None:
    """Build ``flow``'s storage and create or update its deployment (see the module docstring)."""
    if is_loading():
        logger.info("flow.register() skipped while flow %r is being loaded", flow.name)
        return None
    labels = check_labels(labels)
    storage = _storage_of(flow, storage_kwargs)
    with session(settings, client) as current:
        if build:
            storage.build(settings=current.settings, client=current.client)
        return _deploy(flow, storage, current, project_name, labels, work_pool, notify, namespace)


def register_flows(
    flows: Sequence[Flow[..., Any]],
    *,
    project_name: str | None = None,
    labels: Sequence[str] = (),
    work_pool: str = "default",
    settings: Settings | None = None,
    client: ConveyorClient | None = None,
    notify: Callable[[str], None] | None = None,
    namespace: Mapping[str, Any] | None = None,
) -> list[Deployment]:
    """Register several flows, building each storage object once (``conveyor register``)."""
    labels = check_labels(labels)
    storages = [_storage_of(flow, {}) for flow in flows]
    with session(settings, client) as current:
        built: set[int] = set()
        for storage in storages:
            if id(storage) not in built:
                storage.build(settings=current.settings, client=current.client)
                built.add(id(storage))
        return [
            _deploy(flow, storage, current, project_name, labels, work_pool, notify, namespace)
            for flow, storage in zip(flows, storages, strict=True)
        ]


def _storage_of(flow: Flow[..., Any], storage_kwargs: Mapping[str, Any]) -> Storage:
    from conveyor.storage.base import Storage

    storage = flow.storage
    if storage is None:
        from conveyor.storage.local import Local

        storage = Local(**storage_kwargs)
        flow.storage = storage
    elif storage_kwargs:
        raise ConfigError(
            f"register() got {', '.join(sorted(storage_kwargs))}, which only apply to the "
            "default storage, but the flow has one"
        )
    if not isinstance(storage, Storage):
        raise ConfigError(
            f"flow {flow.name!r} has storage {storage!r}, which is not a conveyor.storage class",
            hint="use Local(), GitHub(...), Webhook(...), ... from conveyor.storage",
        )
    held = storage._flows.get(flow.name)
    if flow.name not in storage:
        storage.add_flow(flow)
    elif held is not flow:
        if held is not None and held.fn is not flow.fn:
            storage.add_flow(flow)  # another flow of the same name: the name conflict
        storage._flows[flow.name] = flow  # a copy of the same flow (with_options)
    if flow.result is None and storage.result is not None:
        flow.result = storage.result
    return storage


def _deploy(
    flow: Flow[..., Any],
    storage: Storage,
    current: Session,
    project_name: str | None,
    labels: Sequence[str],
    work_pool: str,
    notify: Callable[[str], None] | None,
    namespace: Mapping[str, Any] | None,
) -> Deployment:
    from conveyor.deploy import DeployableFlow
    from conveyor.storage._serialize import flow_attribute

    attribute = flow_attribute(flow, namespace) if storage.stored_as_script else ""
    source, entrypoint = storage.deployment_source(flow.name, attribute=attribute, current=current)
    expected = storage.built_version(flow.name)
    if expected is not None:
        found = source.resolve(current.ctx)
        if found != expected:
            raise ConfigError(
                f"{source.describe()} does not hold what was just built for flow {flow.name!r} "
                f"(built {expected[:19]}, read back {found[:19]})",
                hint="check that the build and get-flow locations name the same file",
            )
    deployable = DeployableFlow(source, entrypoint)
    return deployable.deploy(
        project_name or "default",
        work_pool=work_pool,
        job_variables=job_variables_for(flow, storage, labels),
        settings=current.settings,
        client=current.client,
        notify=notify,
    )


def job_variables_for(
    flow: Flow[..., Any], storage: Storage, labels: Sequence[str] = ()
) -> dict[str, Any]:
    """The deployment's job variables: run config, environment, secrets and every label."""
    from conveyor.run_configs import UniversalRun

    parts: list[dict[str, Any]] = [storage.run_job_variables(flow.name)]
    if flow.environment is not None:
        parts.append(flow.environment.job_variables())
    parts.append((flow.run_config or UniversalRun()).job_variables())
    variables: dict[str, Any] = {}
    env: dict[str, Any] = {}
    every = set(labels) | set(storage.labels)
    for part in parts:
        env.update(part.pop("env", None) or {})
        every |= set(part.pop("labels", None) or [])
        variables.update(part)
    env.update(storage.run_env())
    if env:
        variables["env"] = env
    if every:
        variables["labels"] = sorted(every)
    return variables


def load_flows_from_script(path: str) -> tuple[list[Flow[..., Any]], dict[str, Any]]:
    """Run the script at ``path`` (its folder first on ``sys.path``, `loading` set); its flows
    and namespace. Flows without storage get ``Local(path=..., stored_as_script=True)``."""
    import os
    import runpy
    import sys

    from conveyor._context import loading
    from conveyor.errors import FlowLoadError
    from conveyor.flows import Flow
    from conveyor.storage.local import Local

    script = os.path.abspath(path)
    if not os.path.isfile(script):
        raise ConfigError(f"flow script {path} does not exist", hint="pass the path of a .py file")
    folder = os.path.dirname(script)
    sys.path.insert(0, folder)
    try:
        with loading(script):
            namespace = runpy.run_path(script, run_name="<flow>")
    except (ConfigError, FlowLoadError):
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FlowLoadError(
            f"could not run {path}: {type(exc).__name__}: {exc}",
            hint="run the script with python to see the traceback",
        ) from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    flows = _unique(v for v in namespace.values() if isinstance(v, Flow))
    for flow in flows:
        if flow.storage is None:
            flow.storage = Local(path=script, stored_as_script=True)
    return flows, namespace


def load_flows_from_module(name: str) -> tuple[list[Flow[..., Any]], dict[str, Any]]:
    """Import module ``name`` and return its flows and namespace; flows without storage get
    ``Module(name)``."""
    import importlib

    from conveyor._context import loading
    from conveyor.errors import FlowLoadError
    from conveyor.flows import Flow
    from conveyor.storage.module import Module

    try:
        with loading():
            module = importlib.import_module(name)
    except ImportError as exc:
        raise FlowLoadError(f"module {name!r} cannot be imported: {exc}") from exc
    namespace = dict(vars(module))
    flows = _unique(v for v in namespace.values() if isinstance(v, Flow))
    for flow in flows:
        if flow.storage is None:
            flow.storage = Module(name)
    return flows, namespace


def _unique(found: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for flow in found:
        seen.setdefault(id(flow), flow)
    return list(seen.values())
