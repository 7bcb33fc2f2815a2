"""Deploying a flow: resolve its code to a version, check it loads, store the deployment.

```python
from conveyor import flow

flow.from_source("./project", "flows.py:hello").deploy(name="nightly", parameters={"n": 5})
```

`DeployableFlow.deploy` takes one path for every source:

1. **check** the name, the pull steps (every stored step must be one a worker runs) and that
   the server answers with the work pool;
2. **resolve** the source's ref to an immutable version (a folder: the digest of its bundle
   manifest; git: a commit);
3. **preflight**: load the flow in a child interpreter from the tree of that version (a folder
   in place; a git commit from a partial checkout of the entrypoint's module and what it
   imports from the tree; anything else through the code cache: `conveyor._deploy_tree`),
   after the pull steps' working directory, with the run environment its pull steps and
   ``EXTRA_PIP_PACKAGES`` ask for (built here, in this machine's cache:
   `conveyor._deploy_env`); the flow's name, parameter schema, retries and timeout come back,
   and the default parameters are checked against the schema. A flow that does not load fails
   the deploy here. The answer is cached by version, entrypoint, working directory and
   interpreter, so re-deploying unchanged code starts no child process;
4. **snapshot** a source that is not versioned by itself (``supports_versioning`` is False: a
   folder) into the bundle store of ``CONVEYOR_BUNDLE_STORE`` and pin the snapshot: the
   deployment then points at the store, so every run gets the deployed bytes whatever happens
   to the folder. A store only this machine can read, used with a remote server, labels the
   deployment with this host's name (only workers here claim it) and says so;
5. **put** the deployment: the source's secret-free spec (credential *names*), the pinned
   version, the flow's parameter schema. Unchanged code and options make no new revision.

Nothing is written until every check has passed.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._deploy_tree import (
    MAX_PATH_LENGTH,
    DeployTree,
    WholeTreeNeeded,
    deploy_tree,
    preflight_flow,
)
from conveyor._names import closest_name
from conveyor._preflight import FlowInfo
from conveyor._values import check_parameters
from conveyor.errors import ConfigError, FlowLoadError

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.docker import DockerImage
    from conveyor.schemas import Deployment
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext, Source

__all__ = [
    "MAX_PATH_LENGTH",
    "DeployableFlow",
    "FlowInfo",
    "deploy_flow",
    "entrypoint_for",
    "from_source",
]

logger = logging.getLogger(__name__)


def _warn(message: str) -> None:
    logger.warning("%s", message)


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
        notify: Callable[[str], None] | None = None,
        result_storage: Any = None,
        image: str | DockerImage | None = None,
        build: bool = True,
        push: bool = True,
        work_pool_name: str | None = None,
        **prefect_only: Any,
    ) -> Deployment:
        """Create or update deployment ``name`` of this flow; returns it (with its revision).

        Prefect's spellings: ``work_pool_name`` is ``work_pool``; ``work_queue_name`` is
        ignored with a note (there are no work queues); its scheduling options
        (``cron``, ``interval``, ``rrule``, ``schedules``, ``triggers``, ``concurrency_limit``,
        ``paused``) are refused in one line unless empty, as in a ``prefect.yaml``.

        ``notify`` receives notes worth telling the person deploying (default: a log warning).
        ``result_storage`` (a URL such as ``s3://bucket/results``, or a storage block) is where
        runs put results that are not JSON (kept in the job variables).
        ``image`` bakes the code into a Docker/OCI image (``build``; ``push`` to its registry,
        else kept on this machine) and pins the deployment to its digest; with ``build=False``
        it is only the image container pools run (see `conveyor.docker._deploy`).
        """
        queue = prefect_only.pop("work_queue_name", None)
        work_pool = _prefect_options(work_pool, work_pool_name, prefect_only)
        if queue not in (None, "default"):
            (notify or _warn)(
                f"work_queue_name {queue!r} is ignored (Conveyor has no work queues): the runs "
                f"go to work pool {work_pool!r}; give them a pool of their own to keep them apart"
            )
        if result_storage is not None:
            to_spec = getattr(result_storage, "to_spec", None)
            stored = to_spec() if callable(to_spec) else result_storage
            if not isinstance(stored, str | dict):
                raise ConfigError("result_storage must be a URL or a storage block")
            job_variables = {**dict(job_variables or {}), "result_storage": stored}
        _check_name(name)
        check_parameters(parameters or {}, what="default parameter")
        if settings is None:  # a public helper: read the settings as the command line does
            from conveyor.settings import Settings

            settings = Settings.from_env()
        if client is None:
            from conveyor.connect import connect

            with connect(settings) as own:
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
                    notify=notify,
                    image=image,
                    build=build,
                    push=push,
                )
        runner = _Deploy(
            self, settings, client, notify or _warn, image=image, build=build, push=push
        )
        return runner.run(
            name,
            work_pool=work_pool,
            parameters=dict(parameters or {}),
            job_variables=dict(job_variables or {}),
            tags=list(tags or []),
            description=description,
            follow_ref=follow_ref,
            pull_steps=[dict(step) for step in pull_steps or []],
        )


class _Deploy:
    """One deploy of one flow (see the module docstring for the path)."""

    def __init__(
        self,
        flow: DeployableFlow,
        settings: Settings,
        client: ConveyorClient,
        notify: Callable[[str], None],
        *,
        image: str | DockerImage | None = None,
        build: bool = True,
        push: bool = True,
    ) -> None:
        from conveyor.connect import fetch_context

        self.flow = flow
        self.source = flow.source
        self.settings = settings
        self.client = client
        self.notify = notify
        self.ctx: FetchContext = fetch_context(settings, client)
        self.image = image
        self.build = build
        self.push = push

    def run(
        self,
        name: str,
        *,
        work_pool: str,
        parameters: dict[str, Any],
        job_variables: dict[str, Any],
        tags: list[str],
        description: str | None,
        follow_ref: bool,
        pull_steps: list[dict[str, Any]],
    ) -> Deployment:
        from conveyor.schemas import DeploymentCreate
        from conveyor.steps import check_steps

        _check_name(name)
        check_steps(pull_steps, section="pull")
        follow_ref = self.source.follows_ref(follow_ref)
        if follow_ref and self.image is not None and self.build:
            raise ConfigError(
                "follow_ref cannot be used with an image build: the image pins one version",
                hint="deploy with build=False to use the image only as the runtime",
            )
        if follow_ref and not self.source.supports_versioning:
            raise ConfigError(
                f"follow_ref needs a source with a moving ref; {self.source.describe()} is "
                "deployed as a pinned snapshot",
                hint="deploy from git (a branch) to follow a ref",
            )
        template = _check_server(self.client, work_pool)
        whole = self.image is not None and self.build  # an image bakes the whole tree
        try:
            with deploy_tree(self.source, self.settings, self.ctx, partial=not whole) as tree:
                info, source_spec, labels, version, job_variables = self._check(
                    tree, pull_steps, job_variables, parameters, template=template
                )
        except WholeTreeNeeded as why:
            logger.info("preflight needs the whole tree reason=%s", why)
            with deploy_tree(self.source, self.settings, self.ctx, partial=False) as tree:
                info, source_spec, labels, version, job_variables = self._check(
                    tree, pull_steps, job_variables, parameters, template=template
                )
        if self.image is not None and not self.build:
            shown = self.image if isinstance(self.image, str) else str(self.image.ref)
            job_variables = {"image": shown, **job_variables}
        if labels:
            existing = job_variables.get("labels")
            merged = [*(existing if isinstance(existing, list) else []), *labels]
            job_variables = {**job_variables, "labels": sorted(set(merged))}
        _check_job_variables(template, job_variables)
        for note in _ignored_job_variables(template, job_variables, work_pool):
            self.notify(note)
        request = DeploymentCreate(
            flow_name=info.flow_name,
            name=name,
            entrypoint=self.flow.entrypoint,
            source=source_spec,
            version=version,
            follow_ref=follow_ref,
            pull_steps=pull_steps,
            parameters=parameters,
            parameter_schema=info.parameter_schema,
            work_pool=work_pool,
            job_variables=job_variables,
            tags=tags,
            description=info.description if description is None else description,
            retries=info.retries,
            retry_delay_seconds=info.retry_delay_seconds,
            timeout_seconds=info.timeout_seconds,
        )
        return self.client.put_deployment(request)

    def _check(
        self,
        tree: DeployTree,
        pull_steps: list[dict[str, Any]],
        job_variables: dict[str, Any],
        parameters: dict[str, Any],
        *,
        template: Mapping[str, Any] | None,
    ) -> tuple[FlowInfo, dict[str, Any], list[str], str, dict[str, Any]]:
        """Preflight the flow from ``tree`` (with the job variables its runs will have: these
        over the defaults of the pool's base job ``template``), check the default parameters,
        and pin the code: the flow's info, the source spec to store, the labels the deployment
        needs, the version deployed and the job variables (with the image an image build
        made)."""
        from conveyor._jobvars import effective_job_variables

        try:
            info = preflight_flow(
                tree,
                source=self.source,
                entrypoint=self.flow.entrypoint,
                pull_steps=pull_steps,
                job_variables=effective_job_variables(template, job_variables),
                settings=self.settings,
                store=self.client,
            )
        except FlowLoadError as exc:
            if getattr(self.source, "materialised", None) is not None:
                raise  # a folder of this machine: its paths are the user's own
            raise _named_by_source(exc, tree, self.source) from None
        _check_parameters(info, parameters)
        if self.image is not None and self.build:
            from conveyor.docker._deploy import bake

            baked = bake(
                self.image,
                tree.path,
                push=self.push,
                settings=self.settings,
                ctx=self.ctx,
                notify=self.notify,
            )
            job_variables = {"image": baked.image, **job_variables}
            return info, baked.spec, baked.labels, baked.version, job_variables
        spec, labels = self._pin(tree.path, tree.version)
        return info, spec, labels, tree.version, job_variables

    def _pin(self, tree: Path, version: str) -> tuple[dict[str, Any], list[str]]:
        """The source spec to store and the labels the deployment needs: the source itself when
        it versions its code, else a snapshot in the bundle store."""
        if self.source.supports_versioning:
            return self.source.to_spec(), []
        from conveyor.sources.store import BundleStore

        store = BundleStore(self.settings.effective_bundle_store)
        pushed = store.push(tree, self.ctx)
        if pushed != version:
            raise ConfigError(
                f"{self.source.describe()} changed while it was being deployed",
                hint="deploy again",
            )
        labels: list[str] = []
        if self.settings.api_url and store.is_machine_local:
            host = socket.gethostname()
            labels.append(host)
            self.notify(
                f"the code was stored in {store.describe()}, on this machine only, so the "
                f"deployment is labelled {host!r}: only workers on this host will run it. To "
                "run it anywhere, set CONVEYOR_BUNDLE_STORE=server (the Conveyor server keeps "
                "the code) or a blob URL every worker can read, or deploy from git."
            )
        return store.to_spec(), labels


def _named_by_source(exc: FlowLoadError, tree: DeployTree, source: Source) -> FlowLoadError:
    """``exc`` with the code cache's checkout path replaced by what the user knows: paths
    relative to the source's root, the root named by the source and its version."""
    url = getattr(source, "describe_url", None)
    version = tree.version[:12] if len(tree.version) == 40 else tree.version[:19]
    where = f"{url() if callable(url) else source.describe()} at {version}"

    def named(text: str) -> str:
        for root in {str(tree.path.resolve()), str(tree.path)}:
            text = text.replace(
                f"the path is relative to {root}", f"the path is relative to the root of {where}"
            )
            text = text.replace(root + os.sep, "").replace(root, where)
        return text

    return FlowLoadError(named(exc.message), hint=None if exc.hint is None else named(exc.hint))


def from_source(
    source: Source | str | os.PathLike[str], entrypoint: str, **options: Any
) -> DeployableFlow:
    """A deployable flow from a `Source`, a folder path or a URL (``options`` go to the source:
    ``branch=``, ``credentials=``); a folder entrypoint may be given relative to the folder or
    as a path inside it."""
    from conveyor.sources import source_from_url
    from conveyor.sources.base import Source

    if isinstance(source, Source):
        if options:
            raise ConfigError("source options apply to a path or URL, not to a Source object")
        built = source
    else:
        built = source_from_url(os.fspath(source), **options)
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
    """A file entrypoint relative to a folder source (absolute or ./ forms accepted, and a path
    from the working directory into the folder: ``examples/hello/flows.py`` for the folder
    ``examples/hello``, when the folder itself has no such path)."""
    where, colon, attribute = entrypoint.rpartition(":")
    folder = getattr(source, "path", None)
    if not colon or not where.endswith(".py") or not isinstance(folder, Path):
        return entrypoint
    path = Path(where)
    if not path.is_absolute() and not (folder / path).exists():
        here = Path.cwd() / path
        if here.is_file() and here.resolve().is_relative_to(folder.resolve()):
            path = here
    if path.is_absolute():
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ConfigError(
                f"entrypoint {entrypoint} is not inside the source folder {folder}",
                hint="pass --source with a folder that contains the flow file",
            )
        path = path.resolve().relative_to(folder.resolve())
    return f"{path.as_posix().removeprefix('./')}:{attribute}"


def _check_server(client: ConveyorClient, work_pool: str) -> dict[str, Any]:
    """The server answers (with our key) and has the work pool: its base job template."""
    pools = {pool.name: pool for pool in client.list_pools()}
    if work_pool not in pools:
        raise ConfigError(
            f"work pool {work_pool!r} does not exist",
            hint=f"create it with `conveyor pool create {work_pool}`",
        )
    return pools[work_pool].base_job_template


def _check_job_variables(template: Mapping[str, Any], job_variables: Mapping[str, Any]) -> None:
    """The job variables fit the pool's base job template (its JSON schema). Without job
    variables there is nothing to check: the template's own defaults were checked when the
    pool was created."""
    if job_variables and template:
        from conveyor._jobs import check_job_variables

        check_job_variables(template, job_variables)


def _ignored_job_variables(
    template: Mapping[str, Any], job_variables: Mapping[str, Any], work_pool: str
) -> list[str]:
    """A note for each job variable the pool's template does not declare: its runs ignore it
    (``working_directory`` for ``working_dir`` would otherwise go unnoticed)."""
    variables = template.get("variables") if template else None
    declared = variables.get("properties") if isinstance(variables, Mapping) else None
    if not isinstance(declared, Mapping):
        return []
    notes = []
    for name in sorted(set(job_variables) - set(declared) - {"labels"}):
        close = closest_name(name, sorted(declared))
        notes.append(
            f"job variable {name} is not a variable of work pool {work_pool!r}: its runs "
            "ignore it" + (f" (did you mean {close}?)" if close else "")
        )
    return notes


_SCHEDULING = frozenset(
    {
        "cron",
        "interval",
        "rrule",
        "schedule",
        "schedules",
        "triggers",
        "concurrency_limit",
        "paused",
    }
)


def _prefect_options(work_pool: str, work_pool_name: str | None, others: Mapping[str, Any]) -> str:
    """The work pool, from Prefect's ``work_pool_name`` too; a one-line error for Prefect's
    scheduling options (unless empty), Python's own for any other unknown keyword."""
    for key, value in others.items():
        if key not in _SCHEDULING:
            raise TypeError(f"deploy() got an unexpected keyword argument {key!r}")
        if value:
            raise ConfigError(
                f"{key} is not supported by Conveyor: it has no schedules or triggers",
                hint="start runs with `conveyor run` or the API (from cron or a scheduler)",
            )
    if work_pool_name is None:
        return work_pool
    if work_pool not in ("default", work_pool_name):
        raise ConfigError(
            f"work_pool={work_pool!r} and work_pool_name={work_pool_name!r} disagree",
            hint="give one of them (work_pool_name is Prefect's name for work_pool)",
        )
    return work_pool_name


def _check_name(name: str) -> None:
    from conveyor._names import check_deployment_name

    check_deployment_name(name)


def _check_parameters(info: FlowInfo, parameters: Mapping[str, Any]) -> None:
    """Default parameters must be parameters of the flow, of the declared types (values given
    at run time are checked per run)."""
    from conveyor._params import validate_parameters

    schema = info.parameter_schema
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    if not schema.get("additionalProperties"):
        for key in parameters:
            if key not in properties:
                known = ", ".join(properties) or "no parameters"
                raise ConfigError(
                    f"unknown parameter {key!r} for flow {info.flow_name}",
                    hint=f"the flow takes: {known}",
                )
    if parameters:
        validate_parameters({**schema, "required": []}, parameters)
