"""Deploying a flow: resolve its code to a version, check it loads, store the deployment.

```python
from conveyor import flow

flow.from_source("./project", "flows.py:hello").deploy(name="nightly", parameters={"n": 5})
```

`DeployableFlow.deploy` does, in order:

1. **resolve** the source's ref to an immutable version (a local folder: the digest of its
   bundle manifest; git: a commit);
2. **preflight**: materialise that version (a local folder is used in place; any other source
   goes through the code cache) and load the flow in a *child* interpreter
   (``python -m conveyor._preflight``), which reports its name, parameter schema, retries and
   timeout. A flow that does not load fails the deploy with its one-line import error, before
   anything is written;
3. for a local folder, **push** the bundle into the local bundle store (nothing is written when
   that version is already there). The deployment then points at the store (``{"kind":
   "store"}``, whose directory each worker resolves from its own ``CONVEYOR_HOME``) rather than
   at the folder, so every run gets the deployed version even after the folder is edited;
4. **put** the deployment: only the source's secret-free spec (credential *names*), the pinned
   version and the flow's parameter schema. Unchanged code and options make no new revision.

Before anything is written, the server is asked for the work pool (so a wrong key, an
unreachable server or an unknown pool fail the deploy cleanly). For a local folder the preflight
child starts first and runs while the version is computed and the server is asked.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._values import check_parameters
from conveyor.errors import ConfigError, FlowLoadError, SourceNotFound

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.schemas import Deployment
    from conveyor.settings import Settings
    from conveyor.sources.base import Source

__all__ = [
    "DeployableFlow",
    "FlowInfo",
    "Preflight",
    "deploy_flow",
    "entrypoint_for",
    "from_source",
]

logger = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class FlowInfo:
    """What the preflight learnt about the flow."""

    flow_name: str
    parameter_schema: dict[str, Any]
    retries: int = 0
    retry_delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    description: str = ""


class Preflight:
    """Loading the flow at ``entrypoint`` under ``root`` in a child interpreter.

    `start` spawns it; `result` waits for it and returns a `FlowInfo` or raises `FlowLoadError`
    with the child's one-line error.
    """

    def __init__(self, root: Path, entrypoint: str) -> None:
        self.root = root
        self.entrypoint = entrypoint
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self) -> Preflight:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-B", "-m", "conveyor._preflight", str(self.root), self.entrypoint],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def cancel(self) -> None:
        """Stop the child (the deploy failed for another reason)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self, *, timeout: float = PREFLIGHT_TIMEOUT_SECONDS) -> FlowInfo:
        if self._proc is None:
            self.start()
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise FlowLoadError(
                f"loading flow {self.entrypoint} took longer than {timeout:g}s",
                hint="does the module do slow work at import time?",
            ) from None
        logger.debug(
            "preflight done entrypoint=%s seconds=%.3f",
            self.entrypoint,
            time.monotonic() - self._started,
        )
        answer = _last_json_line(out)
        if answer is None:
            tail = err.decode(errors="replace").strip().splitlines()
            why = tail[-1] if tail else f"exit status {self._proc.returncode}"
            raise FlowLoadError(f"flow {self.entrypoint} could not be loaded: {why}")
        if "error" in answer:
            raise FlowLoadError(
                f"flow {self.entrypoint} could not be loaded: {answer['error']}",
                hint=answer.get("hint") or None,
            )
        return FlowInfo(
            flow_name=str(answer["flow_name"]),
            parameter_schema=dict(answer.get("parameter_schema") or {}),
            retries=int(answer.get("retries") or 0),
            retry_delay_seconds=float(answer.get("retry_delay_seconds") or 0.0),
            timeout_seconds=answer.get("timeout_seconds"),
            description=str(answer.get("description") or ""),
        )


def _last_json_line(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


@dataclass(frozen=True)
class DeployableFlow:
    """A flow's code location: a source and an entrypoint in it. `deploy` creates a deployment."""

    source: Source
    entrypoint: str

    def deploy(
        self,
        name: str,
        *,
        work_pool: str = "default",
        parameters: Mapping[str, Any] | None = None,
        job_variables: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        description: str | None = None,
        follow_ref: bool = False,
        pull_steps: Sequence[Mapping[str, Any]] | None = None,
        settings: Settings | None = None,
        client: ConveyorClient | None = None,
    ) -> Deployment:
        """Create or update deployment ``name`` of this flow; returns it (with its revision)."""
        from conveyor.schemas import DeploymentCreate

        _check_name(name)
        check_parameters(parameters or {}, what="default parameter")
        if settings is None:
            from conveyor.settings import Settings

            settings = Settings.from_env()
        if client is None:
            from conveyor.client import ConveyorClient

            with ConveyorClient.from_settings(settings) as own:
                return self.deploy(
                    name,
                    work_pool=work_pool,
                    parameters=parameters,
                    job_variables=job_variables,
                    tags=tags,
                    description=description,
                    follow_ref=follow_ref,
                    pull_steps=pull_steps,
                    settings=settings,
                    client=own,
                )
        spec, version, info = self._prepare(
            settings,
            client=client,
            work_pool=work_pool,
            follow_ref=follow_ref,
            parameters=parameters or {},
        )
        request = DeploymentCreate(
            flow_name=info.flow_name,
            name=name,
            entrypoint=self.entrypoint,
            source=spec,
            version=version,
            follow_ref=follow_ref,
            pull_steps=[dict(step) for step in pull_steps or []],
            parameters=dict(parameters or {}),
            parameter_schema=info.parameter_schema,
            work_pool=work_pool,
            job_variables=dict(job_variables or {}),
            tags=list(tags or []),
            description=info.description if description is None else description,
            retries=info.retries,
            retry_delay_seconds=info.retry_delay_seconds,
            timeout_seconds=info.timeout_seconds,
        )
        return client.put_deployment(request)

    def _prepare(
        self,
        settings: Settings,
        *,
        client: ConveyorClient,
        work_pool: str,
        follow_ref: bool,
        parameters: Mapping[str, Any],
    ) -> tuple[dict[str, Any], str, FlowInfo]:
        """The deployment's source spec, its version and the preflight's answer.

        Every check — the flow loads, the parameters exist, the server answers (key, pool) — is
        done before the bundle is pushed, so a refused deploy writes nothing.
        """
        from conveyor.sources.local import LocalSource

        if isinstance(self.source, LocalSource):
            if follow_ref:
                raise ConfigError(
                    "follow_ref needs a source with a moving ref (a git branch, a blob prefix)",
                    hint="a local folder is deployed as a pinned bundle",
                )
            folder = self.source.path
            if not folder.is_dir():
                raise SourceNotFound(
                    f"folder {folder} does not exist or is not a directory",
                    source=self.source.describe(),
                )
            check = Preflight(folder, self.entrypoint).start()  # runs while we resolve and ask
            try:
                version = self.source.resolve()
                _check_server(client, work_pool)
                info = check.result()
            finally:
                check.cancel()
            _check_parameters(info, parameters)
            store = self.source.store
            spec = store.to_spec()
            if "root" not in spec:  # the default store: this deploy's settings say where it is
                from conveyor.sources.store import LocalStoreSource

                store = LocalStoreSource(settings.storage_dir)
            pushed = store.push(folder)
            if pushed != version:
                raise ConfigError(
                    f"folder {folder} changed while it was being deployed", hint="deploy again"
                )
            return spec, version, info
        from conveyor.cache import CodeCache

        _check_server(client, work_pool)
        version = self.source.resolve()
        with CodeCache.from_settings(settings).lease(self.source, version) as checkout:
            info = Preflight(checkout, self.entrypoint).result()  # not evicted while it reads
        _check_parameters(info, parameters)
        return self.source.to_spec(), version, info


def from_source(
    source: Source | str | os.PathLike[str], entrypoint: str, **options: Any
) -> DeployableFlow:
    """A deployable flow from a `Source`, a folder path or a URL (``options`` go to the source:
    ``branch=``, ``credentials=``); a folder entrypoint may be given relative to the folder or
    as a path inside it."""
    from conveyor.sources.base import Source, source_from_url

    if isinstance(source, Source):
        if options:
            raise ConfigError("source options apply to a path or URL, not to a Source object")
        built = source
    else:
        try:
            built = source_from_url(os.fspath(source), **options)
        except TypeError as exc:
            raise ConfigError(
                f"{', '.join(sorted(options))} does not apply to source {os.fspath(source)}"
            ) from exc
    return DeployableFlow(built, _relative_entrypoint(built, entrypoint))


def deploy_flow(flow: Any, *, name: str, **kwargs: Any) -> Deployment:
    """Deploy ``flow`` (a `Flow` loaded from a file, or a `DeployableFlow`) as ``name``.

    A `Flow` is deployed from the folder it was loaded from: the working directory when its
    file is inside it, else the file's own folder.
    """
    if isinstance(flow, DeployableFlow):
        return flow.deploy(name, **kwargs)
    source_dir, entrypoint = entrypoint_for(flow)
    return from_source(source_dir, entrypoint).deploy(name, **kwargs)


def entrypoint_for(flow: Any, *, cwd: Path | None = None) -> tuple[Path, str]:
    """The folder to deploy a loaded `Flow` from, and its entrypoint in that folder."""
    function = getattr(flow, "fn", flow)
    qualname = getattr(function, "__qualname__", "")
    try:
        file = inspect.getsourcefile(function)
    except TypeError:
        file = None
    if not file or "<locals>" in qualname or not qualname:
        raise ConfigError(
            f"cannot tell where flow {getattr(flow, 'name', function)!r} is defined",
            hint="define it at the top level of a .py file, or use "
            "flow.from_source(folder, 'file.py:function').deploy(...)",
        )
    path = Path(file).resolve()
    base = (cwd or Path.cwd()).resolve()
    root = base if path.is_relative_to(base) else path.parent
    return root, f"{path.relative_to(root).as_posix()}:{qualname}"


def _relative_entrypoint(source: Source, entrypoint: str) -> str:
    """A file entrypoint relative to a local folder source (absolute or ./ forms accepted)."""
    from conveyor.sources.local import LocalSource

    where, colon, attribute = entrypoint.rpartition(":")
    if not colon or not where.endswith(".py") or not isinstance(source, LocalSource):
        return entrypoint
    path = Path(where)
    if path.is_absolute():
        if not path.resolve().is_relative_to(source.path.resolve()):
            raise ConfigError(
                f"entrypoint {entrypoint} is not inside the source folder {source.path}",
                hint="pass --source with a folder that contains the flow file",
            )
        path = path.resolve().relative_to(source.path.resolve())
    return f"{path.as_posix().removeprefix('./')}:{attribute}"


def _check_server(client: ConveyorClient, work_pool: str) -> None:
    """The server answers (with our key) and has the work pool."""
    pools = {pool.name for pool in client.list_pools()}
    if work_pool not in pools:
        raise ConfigError(
            f"work pool {work_pool!r} does not exist",
            hint=f"create it with `conveyor pool create {work_pool}`",
        )


def _check_name(name: str) -> None:
    from conveyor._names import check_deployment_name

    check_deployment_name(name)


def _check_parameters(info: FlowInfo, parameters: Mapping[str, Any]) -> None:
    """Default parameters must be parameters of the flow (values are checked per run)."""
    properties = info.parameter_schema.get("properties")
    if not isinstance(properties, Mapping) or info.parameter_schema.get("additionalProperties"):
        return
    for key in parameters:
        if key not in properties:
            known = ", ".join(properties) or "no parameters"
            raise ConfigError(
                f"unknown parameter {key!r} for flow {info.flow_name}",
                hint=f"the flow takes: {known}",
            )
