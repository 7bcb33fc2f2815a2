"""``conveyor.yaml``: a project's pull steps and its deployments.

```yaml
name: analytics                      # optional
build: []                            # deploy-time steps: build_docker_image, ...
push: []                             # deploy-time steps: push_docker_image, ...
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
    # pull: [...]                    # optional: this deployment's own pull steps
```

`load_project` reads and checks the file (pydantic, at this config edge) into frozen dataclasses;
`Project.source` builds the deployment's `Source` from its pull steps (the folder of the file
when no step names the code). ``conveyor deploy`` with no arguments deploys every deployment of
the file in the current directory, ``--name N`` one of them (see `deploy_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.sources.base import Source

__all__ = [
    "PROJECT_FILE",
    "Project",
    "ProjectDeployment",
    "deploy_options",
    "find_project",
    "load_project",
]

PROJECT_FILE = "conveyor.yaml"


class _WorkPool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    job_variables: dict[str, Any] = Field(default_factory=dict)
    work_queue_name: str | None = None


class _Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    entrypoint: str
    work_pool: str | _WorkPool = "default"
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    version: str | None = None
    follow_ref: bool = False
    pull: list[dict[str, Any]] | None = None
    build: list[dict[str, Any]] | None = None
    push: list[dict[str, Any]] | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = None
    prefect_version: str | None = Field(default=None, alias="prefect-version")
    pull: list[dict[str, Any]] = Field(default_factory=list)
    build: list[dict[str, Any]] = Field(default_factory=list)
    push: list[dict[str, Any]] = Field(default_factory=list)
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
    """A loaded ``conveyor.yaml``."""

    path: Path
    name: str | None
    pull: tuple[Mapping[str, Any], ...]
    deployments: tuple[ProjectDeployment, ...]
    build: tuple[Mapping[str, Any], ...] = ()
    push: tuple[Mapping[str, Any], ...] = ()

    def build_steps(self, deployment: ProjectDeployment | None = None) -> list[dict[str, Any]]:
        """The build steps of ``deployment`` (its own, else the project's)."""
        steps = deployment.build if deployment and deployment.build is not None else self.build
        return [dict(step) for step in steps]

    def push_steps(self, deployment: ProjectDeployment | None = None) -> list[dict[str, Any]]:
        """The push steps of ``deployment`` (its own, else the project's)."""
        steps = deployment.push if deployment and deployment.push is not None else self.push
        return [dict(step) for step in steps]

    def pull_steps(self, deployment: ProjectDeployment | None = None) -> list[dict[str, Any]]:
        """The pull steps of ``deployment`` (its own, else the project's)."""
        steps = deployment.pull if deployment and deployment.pull is not None else self.pull
        return [dict(step) for step in steps]

    def source(self, deployment: ProjectDeployment | None = None) -> Source:
        """The source the pull steps name (``deployment``'s own steps first), else the folder
        the file is in."""
        from conveyor.sources.local import LocalSource
        from conveyor.steps import source_from_pull_steps

        named = source_from_pull_steps(self.pull_steps(deployment))
        return named if named is not None else LocalSource(self.path.parent)

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


def find_project(start: Path | str = ".") -> Path | None:
    """``conveyor.yaml`` in ``start`` (a directory), or None."""
    candidate = Path(start) / PROJECT_FILE
    return candidate if candidate.is_file() else None


def load_project(path: Path | str = ".") -> Project:
    """Read ``conveyor.yaml`` (``path`` is the file or its directory) and check it."""
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
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{file}: {where}: {first['msg']}",
            hint="see `conveyor.project` for the file's keys",
        ) from None
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
    )


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
) -> dict[str, Any]:
    """`DeployableFlow.deploy` keywords for ``entry``: the command line's values over the
    file's (``work_pool`` None means none was given)."""
    return {
        "parameters": {**(entry.parameters if entry else {}), **parameters},
        "work_pool": work_pool or (entry.work_pool if entry else "default"),
        "tags": tags or list(entry.tags if entry else ()),
        "follow_ref": follow_ref or bool(entry and entry.follow_ref),
        "job_variables": dict(entry.job_variables) if entry else {},
        "description": description if description is not None or not entry else entry.description,
        "pull_steps": project.pull_steps(entry),
    }
