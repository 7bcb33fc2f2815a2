"""`conveyor deploy` and `conveyor run`.

```
conveyor deploy flows.py:hello --name nightly [--source DIR|URL] [--pool POOL] [--param k=v ...]
conveyor deploy flows.py:hello --name nightly --image REGISTRY/NAME:TAG [--base-image IMAGE]
conveyor deploy [--name NAME | --all] # the deployments of ./conveyor.yaml (all, or one)
conveyor deploy --prefect-yaml prefect.yaml [--name NAME]
conveyor run hello/nightly [--param k=v ...] [--watch]
```

With a project file, each deployment's ``build`` then ``push`` steps run first, here, in the
project folder (`conveyor.steps.deploytime`; one run per distinct pair of sections), and their
outputs fill the deployment's ``{{ step_id.key }}`` templates. A ``prefect.yaml`` (given with
``--prefect-yaml``, or found when there is no ``conveyor.yaml``) is read through the mapping of
`conveyor._prefect_yaml`.

``--param`` values are JSON when they parse as JSON (``n=3``, ``tags=["a"]``), else strings;
`conveyor._values.parse_params` refuses what the server could not store (NaN, a lone surrogate,
nesting past 64 levels) in one line.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from conveyor._values import parse_params
from conveyor.cli._common import (
    console,
    err_console,
    exit_code,
    load_settings,
    note,
    through_outages,
)
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.client import ConveyorClient
    from conveyor.docker import DockerImage
    from conveyor.project import ProjectDeployment
    from conveyor.schemas import LogLine, Run
    from conveyor.sources.base import Source

__all__ = ["parse_params", "register", "split_deployment", "watch_run"]

WATCH_WAIT_SECONDS = 10.0
"""How long one watch request may wait on the server for news."""


def split_deployment(text: str) -> tuple[str, str]:
    """``"FLOW/NAME"`` → ``("FLOW", "NAME")``."""
    flow_name, sep, name = text.partition("/")
    if not sep or not flow_name or not name or "/" in name:
        raise ConfigError(
            f"{text!r} is not a deployment", hint="name it FLOW/DEPLOYMENT, e.g. hello/nightly"
        )
    return flow_name, name


def deploy(
    entrypoint: str | None = typer.Argument(
        None,
        help="path/to/file.py:function or package.module:func (default: the deployments of "
        "conveyor.yaml)",
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Deployment name (with conveyor.yaml: deploy only this one)."
    ),
    deploy_all: bool = typer.Option(
        False, "--all", help="Deploy every deployment of conveyor.yaml (the default)."
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Folder or URL of the code (default: conveyor.yaml's pull steps, else the "
        "current folder).",
    ),
    pool: str | None = typer.Option(None, "--pool", help="Work pool the runs go to."),
    param: list[str] = typer.Option([], "--param", "-p", help="Default parameter KEY=VALUE."),
    tag: list[str] = typer.Option([], "--tag", help="Tag (repeatable)."),
    branch: str | None = typer.Option(None, "--branch", help="Branch or tag of a git source."),
    commit_sha: str | None = typer.Option(
        None, "--commit-sha", help="Commit of a git source (instead of a branch)."
    ),
    directories: list[str] = typer.Option(
        [], "--directories", help="Check out only this directory of a git source (repeatable)."
    ),
    include_submodules: bool = typer.Option(
        False, "--include-submodules", help="Check out a git source's submodules too."
    ),
    credentials: str | None = typer.Option(
        None, "--credentials", help="Name of the credentials a git or blob source uses."
    ),
    description: str | None = typer.Option(None, "--description", help="Description."),
    follow_ref: bool = typer.Option(
        False, "--follow-ref", help="Run the ref's latest version instead of the pinned one."
    ),
    prefect_yaml: str | None = typer.Option(
        None, "--prefect-yaml", help="Deploy from this prefect.yaml (Prefect's steps mapped)."
    ),
    image: str | None = typer.Option(
        None, "--image", help="Bake the code into this image (registry/name:tag) and pin it."
    ),
    base_image: str | None = typer.Option(
        None,
        "--base-image",
        help="With --image: the image the generated Dockerfile builds FROM "
        "(default: python:X.Y-slim of this interpreter).",
    ),
    no_push: bool = typer.Option(
        False, "--no-push", help="With --image: keep the image on this machine."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would be deployed (and the Dockerfile); store nothing."
    ),
) -> None:
    """Deploy flows: pin their code version, check that they load, store the deployments.

    With an ENTRYPOINT, deploy that flow as --name. Without one, deploy the deployments listed
    in ./conveyor.yaml (all of them, or the one named by --name)."""
    from conveyor.cli._progress import transfer_progress
    from conveyor.deploy import from_source
    from conveyor.project import deploy_options, find_project, load_project

    options: dict[str, Any] = {
        key: value
        for key, value in (
            ("branch", branch),
            ("commit_sha", commit_sha),
            ("credentials", credentials),
            ("directories", directories or None),
            ("include_submodules", include_submodules or None),
        )
        if value is not None
    }
    for item in param:
        if "=" not in item:  # `prefect deploy -p POOL`: here -p is --param
            raise ConfigError(
                f"--param {item!r} is not KEY=VALUE",
                hint=f"-p is --param (e.g. -p n=3); for the work pool write --pool {item}",
            )
    parameters = parse_params(param)
    if base_image is not None and image is None:
        raise ConfigError(
            "--base-image is the base of an image build, and there is none",
            hint="add --image REGISTRY/NAME:TAG (the image to bake the code into)",
        )
    baked = _docker_image(image, base_image)
    file: Any = prefect_yaml if prefect_yaml is not None else find_project(".")
    if file is not None and Path(file).name != "prefect.yaml" and Path("prefect.yaml").is_file():
        note(
            f"reading {file}; prefect.yaml beside it is not read "
            "(conveyor deploy --prefect-yaml prefect.yaml deploys from it)"
        )
    if name is not None and "/" in name and file:
        name = name.rpartition("/")[2]  # Prefect's --name FLOW/DEPLOYMENT
    only = name if entrypoint is None else None  # deploying one of the file's: check only it
    project = (
        load_project(file, prefect=prefect_yaml is not None or None, only=only) if file else None
    )
    for said in project.notes if project is not None else ():
        note(said)
    if entrypoint is None:
        if project is None:
            raise ConfigError(
                "nothing to deploy: give an ENTRYPOINT and --name, or run in a folder with a "
                "conveyor.yaml",
                hint="e.g. conveyor deploy flows.py:hello --name nightly",
            )
        entries = list(project.deployments)
        if name is not None:
            entries = [d for d in entries if d.name == name]
            if not entries:
                known = ", ".join(d.name for d in project.deployments) or "none"
                raise ConfigError(
                    f"{project.path.name} has no deployment named {name!r}",
                    hint=f"it has: {known}",
                )
        if not entries:
            raise ConfigError(
                f"{project.path.name} lists no deployments", hint="add a deployments: list"
            )
        targets: list[tuple[str, str, ProjectDeployment | None]] = [
            (entry.entrypoint, entry.name, entry) for entry in entries
        ]
    else:
        if name is None:
            raise ConfigError(
                "--name is required with an ENTRYPOINT",
                hint=f"conveyor deploy {entrypoint} -n NAME",
            )
        entry = project.deployment(name, entrypoint=entrypoint) if project else None
        targets = [(entrypoint, name, entry)]
    if deploy_all and name is not None:
        raise ConfigError("give --name or --all, not both")
    settings = load_settings()
    section_outputs: dict[str, dict[str, Any]] = {}
    with transfer_progress():
        for flow_entrypoint, deployment_name, entry in targets:
            if dry_run:
                folder = project.path.parent if project is not None and source is None else None
                planned = (
                    project.source(entry)
                    if project is not None and source is None and not options
                    else from_source(source or ".", flow_entrypoint, **options).source
                )
                _print_plan(
                    deployment_name,
                    flow_entrypoint,
                    planned,
                    folder=folder or Path(source or "."),
                    image=baked,
                    build_steps=project.build_steps(entry) if project is not None else [],
                )
                continue
            keywords: dict[str, Any] = {
                "work_pool": pool or "default",
                "parameters": parameters,
                "tags": tag,
                "description": description,
                "follow_ref": follow_ref,
            }
            chosen: Any = source or "."
            if project is not None and source is None and not options:
                outputs = _deploy_time_outputs(project, entry, settings, section_outputs)
                chosen = project.source(entry, outputs=outputs)
                keywords = deploy_options(
                    project,
                    entry,
                    parameters=parameters,
                    work_pool=pool,
                    tags=tag,
                    follow_ref=follow_ref,
                    description=description,
                    outputs=outputs,
                )
            deployable = from_source(chosen, flow_entrypoint, **options)
            deployment = deployable.deploy(
                deployment_name,
                **keywords,
                settings=settings,
                notify=note,
                image=baked,
                push=not no_push,
            )
            console.print(
                f"deployment {deployment.flow_name}/{deployment.name} "
                f"version {deployment.version} (revision {deployment.revision})"
            )


def _deploy_time_outputs(
    project: Any,
    entry: ProjectDeployment | None,
    settings: Any,
    done: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Run ``entry``'s build then push steps in the project folder (once per distinct pair of
    sections in this command); their outputs."""
    import os

    from conveyor.connect import connect
    from conveyor.steps import run_deploy_steps

    build, push = project.build_steps(entry), project.push_steps(entry)
    if not build and not push:
        return {}
    key = json.dumps([build, push], sort_keys=True, default=str)
    if key not in done:

        def log(line: str, _stream: str) -> None:
            err_console.print(line, markup=False, highlight=False)

        folder = project.path.parent
        with connect(settings) as client:
            common: dict[str, Any] = {"folder": folder, "secrets": client, "log": log}
            outputs = run_deploy_steps(build, section="build", environ=dict(os.environ), **common)
            done[key] = run_deploy_steps(
                push, section="push", environ=dict(os.environ), outputs=outputs, **common
            )
    return done[key]


def _docker_image(image: str | None, base_image: str | None) -> str | DockerImage | None:
    """What ``--image`` (and ``--base-image``) ask deploy to bake: the image's name, or a
    `DockerImage` when it has a base of its own."""
    if image is None or base_image is None:
        return image
    from conveyor.docker import DockerImage

    return DockerImage(image, base_image=base_image)


def _print_plan(
    name: str,
    entrypoint: str,
    code: Source,
    *,
    folder: Path,
    image: str | DockerImage | None,
    build_steps: list[dict[str, Any]],
) -> None:
    """``--dry-run``: what would be deployed from ``code`` (the source a deploy would use), and
    the Dockerfile of an image build (of ``folder``)."""
    from conveyor.docker import DockerImage
    from conveyor.steps import parse_step

    console.print(f"# deployment {name} ({entrypoint}) from {code.describe()}", markup=False)
    docker_image = DockerImage(image) if isinstance(image, str) else image
    for step in build_steps:
        step_name, arguments, _ = parse_step(step)
        if step_name == "build_docker_image":
            docker_image = DockerImage(
                str(arguments.get("image_name")),
                tag=arguments.get("tag"),
                dockerfile=str(arguments.get("dockerfile", "Dockerfile")),
                base_image=arguments.get("base_image"),
            )
    if docker_image is None:
        how = (
            "the deployment pins the version its ref resolves to"
            if code.supports_versioning
            else "the code is stored as a bundle"
        )
        console.print(f"# no image build: {how}", markup=False)
        return
    console.print(f"# image {docker_image.ref}", markup=False)
    console.print(docker_image.dockerfile_text(folder), markup=False, highlight=False, end="")


def run(
    deployment: str = typer.Argument(..., help="FLOW/DEPLOYMENT"),
    param: list[str] = typer.Option([], "--param", "-p", help="Parameter KEY=VALUE."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Stream logs until the run ends."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="With --watch: give up after this many seconds."
    ),
) -> None:
    """Start a run of a deployment; print its id (with --watch: its logs, state and result)."""
    from conveyor.connect import connect

    flow_name, name = split_deployment(deployment)
    parameters = parse_params(param)
    with connect(load_settings()) as client:
        created = client.create_run(flow_name, name, parameters=parameters)
        console.print(created.id)
        if not watch:
            return
        final = watch_run(client, created.id, timeout=timeout)
    _print_final(final)
    raise typer.Exit(exit_code(final.state))


def watch_run(client: ConveyorClient, run_id: str, *, timeout: float | None = None) -> Run:
    """Print the run's logs as they arrive; return the run once it is final.

    Each request waits on the server until there is news (new lines, another state), so the end
    of a run is seen at once rather than at the next poll.
    """
    after = 0
    state = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        # Once the run is final only the lines not read yet remain: ask without waiting.
        wait = 0.0 if state is not None and state.is_final else WATCH_WAIT_SECONDS
        if deadline is not None:
            wait = max(min(wait, deadline - time.monotonic()), 0.0)
        news = through_outages(
            partial(client.watch_run, run_id, after=after, state=state, wait=wait),
            deadline=deadline,
        )
        for line in news.logs:
            _print_line(line)
            after = max(after, line.seq)
        run = news.run
        state = run.state
        if run.state.is_final and not news.logs:
            return run
        if deadline is not None and time.monotonic() > deadline and not news.logs:
            raise ConfigError(
                f"run {run_id} is still {run.state.value} after {timeout:g}s",
                hint=f"follow it with `conveyor runs logs {run_id} --follow`",
            )


def _print_line(line: LogLine) -> None:
    stamp = _local_time(line.timestamp)
    level = "" if line.level == "INFO" else f"{line.level} "
    console.print(Text.assemble((stamp, "dim"), " ", level, line.message), highlight=False)


def _local_time(when: datetime) -> str:
    return when.astimezone().strftime("%H:%M:%S")


def _print_final(run: Run) -> None:
    state = run.state.value
    colour = "green" if state == "completed" else "red"
    version = run.version[:19] if run.version.startswith("sha256-") else run.version[:12]
    console.print(f"run {run.id} [{colour}]{state}[/] (version {version})", markup=True)
    if run.error:
        err_console.print(f"error: {run.error}", highlight=False)
    if run.result_ref:
        console.print(f"result: stored as {run.result_ref}")
    elif state == "completed":
        console.print(f"result: {json.dumps(run.result)}")
    if run.timings:
        shown = ", ".join(f"{k} {v:.3f}s" for k, v in run.timings.items())
        console.print(f"[dim]timings: {shown}[/]", markup=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("deploy")(deploy)
    app.command("run")(run)
