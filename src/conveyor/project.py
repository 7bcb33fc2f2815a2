"""``conveyor.yaml``: a project's build, push and pull steps and its deployments.

```yaml
name: analytics                      # optional
build: []                            # deploy-time steps (run_shell_script, build_docker_image)
push: []                             # deploy-time steps (push_to_s3, push_docker_image, ...)
pull:                                # where the code lives (one step names it)
  - git_clone:
      repository: https://github.com/org/flows.git
      branch: main
      credentials: gh
deployments:
  - name: nightly
    entrypoint: flows/etl.py:main
    work_pool: default               # or {name: default, job_variables: {...}}
    parameters: {days: 1}
    tags: [etl]
    follow_ref: false                # true: each run takes the branch's latest commit
    # build: [...] / push: [...] / pull: [...]   # optional: this deployment's own sections
```

`load_project` reads and checks the file (pydantic, at this config edge) into frozen dataclasses;
a ``prefect.yaml`` is read through `conveyor._prefect_yaml` (Prefect's keys and step names
mapped to ours; anything that cannot be mapped is named in one line). A deployment's own
``build`` / ``push`` / ``pull`` replace the file's. The build and push steps run at deploy
(`conveyor.steps.deploytime`); their outputs fill ``{{ step_id.key }}`` templates of the pull
steps and of the deployment (`Project.pull_steps`, `deploy_options`); secrets and ``{{ $ENV }}``
in pull steps are left for the worker. `Project.source` builds the deployment's `Source` from its
pull steps (the folder of the file when no step names the code). ``conveyor deploy`` with no
arguments deploys every deployment of the file in the current directory, ``--name N`` one of them.
The file's JSON schema ships as ``conveyor/project.schema.json`` (`schema_path`; printed by
``conveyor project schema``) so editors can validate it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.sources.base import Source

__all__ = [
    "PREFECT_FILE",
    "PROJECT_FILE",
    "Project",
    "ProjectDeployment",
    "deploy_options",
    "filled_here",
    "find_project",
    "load_project",
    "schema_path",
]

PROJECT_FILE = "conveyor.yaml"
PREFECT_FILE = "prefect.yaml"

_Steps = list[dict[str, Any]]


class _WorkPool(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    name: str = "default"
    job_variables: dict[str, Any] = Field(default_factory=dict)
    work_queue_name: str | None = None


class _Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    name: str
    entrypoint: str
    work_pool: str | _WorkPool = "default"
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    version: str | None = None
    follow_ref: bool = False
    build: _Steps | None = None
    push: _Steps | None = None
    pull: _Steps | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)
    name: str | None = None
    prefect_version: str | None = Field(default=None, alias="prefect-version")
    definitions: Any = None
    """Free-form: a place for YAML anchors (``&common``) that the deployments reuse."""
    build: _Steps = Field(default_factory=list)
    push: _Steps = Field(default_factory=list)
    pull: _Steps = Field(default_factory=list)
    deployments: list[_Deployment] = Field(default_factory=list)


@dataclass(frozen=True)
class ProjectDeployment:
    """One entry of ``deployments:``."""

    name: str
    entrypoint: str
    work_pool: str = "default"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    job_variables: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    description: str | None = None
    follow_ref: bool = False
    pull: tuple[Mapping[str, Any], ...] | None = None
    build: tuple[Mapping[str, Any], ...] | None = None
    push: tuple[Mapping[str, Any], ...] | None = None


@dataclass(frozen=True)
class Project:
    """A loaded ``conveyor.yaml`` (or ``prefect.yaml``, mapped)."""

    path: Path
    name: str | None
    pull: tuple[Mapping[str, Any], ...]
    deployments: tuple[ProjectDeployment, ...]
    build: tuple[Mapping[str, Any], ...] = ()
    push: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    """What reading the file changed on the way (a ``prefect.yaml``'s ``requires:``, ...)."""

    def _section(self, deployment: ProjectDeployment | None, name: str) -> list[dict[str, Any]]:
        own = getattr(deployment, name) if deployment is not None else None
        steps = own if own is not None else getattr(self, name)
        return [dict(step) for step in steps]

    def build_steps(self, deployment: ProjectDeployment | None = None) -> list[dict[str, Any]]:
        """The build steps of ``deployment`` (its own, else the file's)."""
        return self._section(deployment, "build")

    def push_steps(self, deployment: ProjectDeployment | None = None) -> list[dict[str, Any]]:
        """The push steps of ``deployment`` (its own, else the file's)."""
        return self._section(deployment, "push")

    def pull_steps(
        self,
        deployment: ProjectDeployment | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The pull steps of ``deployment`` (its own, else the file's), with the outputs of the
        build and push steps filled in (``{{ push_code.folder }}``)."""
        from conveyor.steps import apply_outputs

        steps = self._section(deployment, "pull")
        return [dict(apply_outputs(step, outputs)) for step in steps] if outputs else steps

    def source(
        self,
        deployment: ProjectDeployment | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
    ) -> Source:
        """The source the pull steps name (``deployment``'s own steps first), else the one a
        build or push step made (an output ``source``: an image holding the code), else the
        file's folder. Pull steps win as in Prefect: a built image is then only the runtime."""
        from conveyor.sources.local import LocalSource
        from conveyor.steps import source_from_pull_steps

        named = source_from_pull_steps(self.pull_steps(deployment, outputs=outputs))
        if named is not None:
            return named
        built = (outputs or {}).get("source")
        if isinstance(built, Mapping):  # a build or push step made the code's home (an image)
            from conveyor.sources import source_from_spec

            return source_from_spec(built)
        return LocalSource(self.path.parent)

    def deployment(
        self, name: str | None = None, *, entrypoint: str | None = None
    ) -> ProjectDeployment | None:
        """The deployment called ``name`` (else the only one with ``entrypoint``), or None."""
        if name is not None:
            named = [d for d in self.deployments if d.name == name]
            if named:
                return named[0]
        if entrypoint is not None:
            matching = [d for d in self.deployments if d.entrypoint == entrypoint]
            if len(matching) == 1:
                return matching[0]
        return None


def schema_path() -> Path:
    """The JSON schema of ``conveyor.yaml`` shipped with the package."""
    return Path(__file__).with_name("project.schema.json")


def find_project(start: Path | str = ".") -> Path | None:
    """``conveyor.yaml`` in ``start`` (a directory), else ``prefect.yaml``, else None."""
    for name in (PROJECT_FILE, PREFECT_FILE):
        candidate = Path(start) / name
        if candidate.is_file():
            return candidate
    return None


def load_project(
    path: Path | str = ".", *, prefect: bool | None = None, only: str | None = None
) -> Project:
    """Read ``conveyor.yaml`` (``path`` is the file or its directory) and check it; a file
    named ``prefect.yaml`` (or any file, with ``prefect=True``) is read as Prefect's
    (`conveyor._prefect_yaml`). With ``only``, a deployment of that name, if the file has one,
    is the only one read and checked (the file's shared sections still are)."""
    import yaml

    file = Path(path)
    if file.is_dir():
        file = file / PROJECT_FILE
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist", hint=f"create a {PROJECT_FILE}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{file} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file} must be a mapping (pull:, deployments:)")
    notes: list[str] = []
    numbers = _numbers(raw.get("deployments"), only)
    if numbers is not None:
        raw = {**raw, "deployments": [raw["deployments"][i] for i in numbers]}
    if prefect or (prefect is None and file.name == PREFECT_FILE):
        from conveyor._prefect_yaml import convert

        raw, notes = convert(raw, file=file, numbers=numbers)
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        at = loc[1] if len(loc) > 1 and loc[0] == "deployments" else None
        if numbers is not None and isinstance(at, int):
            loc[1] = numbers[at]  # the deployment's place in the file
        where = ".".join(str(p) for p in loc)
        raise ConfigError(
            f"{file}: {where}: {first['msg']}",
            hint="check the file against `conveyor project schema`",
        ) from None
    for d in parsed.deployments:
        pool = d.work_pool
        queue = pool.work_queue_name if isinstance(pool, _WorkPool) else None
        if isinstance(pool, _WorkPool) and queue not in (None, "default"):
            notes.append(
                f"{file.name}: deployment {d.name}: work_queue_name {queue!r} is ignored "
                f"(Conveyor has no work queues): its runs go to work pool {pool.name!r}; "
                "give them a pool of their own to keep them apart"
            )
    names = [d.name for d in parsed.deployments]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{file}: deployment {duplicates[0]!r} is defined twice")
    return Project(
        path=file.resolve(),
        name=parsed.name,
        pull=tuple(parsed.pull),
        deployments=tuple(_deployment(d) for d in parsed.deployments),
        build=tuple(parsed.build),
        push=tuple(parsed.push),
        notes=tuple(notes),
    )


def _numbers(deployments: Any, only: str | None) -> list[int] | None:
    """The places in the file of the deployments named ``only``; None (all of them) without
    ``only``, or when no deployment has that name (the caller says which names there are)."""
    if only is None or not isinstance(deployments, list):
        return None
    named = [
        i for i, d in enumerate(deployments) if isinstance(d, Mapping) and d.get("name") == only
    ]
    return named or None


def _deployment(d: _Deployment) -> ProjectDeployment:
    pool = d.work_pool if isinstance(d.work_pool, str) else d.work_pool.name
    job_variables = dict(d.job_variables)
    if isinstance(d.work_pool, _WorkPool):
        job_variables = {**d.work_pool.job_variables, **job_variables}
    return ProjectDeployment(
        name=d.name,
        entrypoint=d.entrypoint,
        work_pool=pool,
        parameters=dict(d.parameters),
        job_variables=job_variables,
        tags=tuple(d.tags),
        description=d.description,
        follow_ref=d.follow_ref,
        pull=tuple(d.pull) if d.pull is not None else None,
        build=tuple(d.build) if d.build is not None else None,
        push=tuple(d.push) if d.push is not None else None,
    )


def deploy_options(
    project: Project,
    entry: ProjectDeployment | None,
    *,
    parameters: Mapping[str, Any],
    work_pool: str | None,
    tags: list[str],
    follow_ref: bool,
    description: str | None,
    outputs: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`DeployableFlow.deploy` keywords for ``entry``: the command line's values over the
    file's (``work_pool`` None means none was given), with the outputs of the build and push
    steps filled into the file's values, and ``{{ $NAME }}`` in its parameters, tags and
    description from ``environ`` (this process's: `filled_here`)."""
    from conveyor.steps import apply_outputs

    own: dict[str, Any] = {
        "parameters": dict(entry.parameters) if entry else {},
        "tags": list(entry.tags) if entry else [],
        "job_variables": dict(entry.job_variables) if entry else {},
        "description": entry.description if entry else None,
    }
    if outputs:
        own = apply_outputs(own, outputs)
    here = os.environ if environ is None else environ
    for key in ("parameters", "tags", "description"):
        where = f"deployment {entry.name!r}: {key}" if entry else key
        own[key] = filled_here(own[key], where=where, environ=here)
    return {
        "parameters": {**own["parameters"], **parameters},
        "work_pool": work_pool or (entry.work_pool if entry else "default"),
        "tags": tags or [str(t) for t in own["tags"]],
        "follow_ref": follow_ref or bool(entry and entry.follow_ref),
        "job_variables": own["job_variables"],
        "description": description if description is not None or not entry else own["description"],
        "pull_steps": project.pull_steps(entry, outputs=outputs),
    }


def filled_here(value: Any, *, where: str, environ: Mapping[str, str]) -> Any:
    """``value`` (a deployment's parameters, tags or description) with every ``{{ $NAME }}``
    filled in from ``environ`` now, as ``prefect deploy`` does: nothing fills them later (the
    worker resolves only pull steps and ``job_variables.env``). A variable not set here, or a
    ``{{ secrets.NAME }}`` (its value would be stored in the deployment), is a `ConfigError`."""
    from conveyor.secrets import template_refs

    if isinstance(value, Mapping):
        return {k: filled_here(v, where=f"{where}.{k}", environ=environ) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [filled_here(v, where=where, environ=environ) for v in value]
    if not isinstance(value, str):
        return value
    for ref in template_refs(value):
        if ref.kind == "secret" and ref.text.startswith("{{"):
            raise ConfigError(
                f"{where}: {ref.text} would store a secret in the deployment",
                hint="give runs secrets through job_variables.env (resolved on the worker)",
            )
        if ref.kind != "env":
            continue
        if ref.name not in environ:
            raise ConfigError(
                f"{where}: template {ref.text} has no value in this environment",
                hint=f"export {ref.name}=... where you deploy: a deployment's parameters, "
                "tags and description are filled in at deploy",
            )
        value = value.replace(ref.text, environ[ref.name])
    return value
