"""Reading Prefect's ``prefect.yaml`` as a Conveyor project file: one mapping table, and a
one-line error for anything that cannot be mapped (never silently ignored).

`convert(raw, file=...)` returns the file in ``conveyor.yaml``'s shape plus notes for the person
deploying. Steps are renamed through `STEP_NAMES` (``prefect.deployments.steps.git_clone`` →
``git_clone``, ``prefect_aws.deployments.steps.pull_from_s3`` → ``pull_from_s3``,
``prefect_docker.deployments.steps.build_docker_image`` → ``build_docker_image``, ...); a name
that maps to a step this installation does not have, a step with no equivalent
(``pull_with_block``), an unknown key, a non-empty ``schedules`` / ``triggers`` /
``concurrency_limit``, or a ``{{ prefect.variables.* }}`` template is refused, named. A step's
``requires:`` is dropped with a note (Conveyor's steps are built in). A
``set_working_directory`` with the absolute path of the project folder on the deploying machine
(what ``prefect deploy`` writes) becomes relative to the code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError

__all__ = ["STEP_NAMES", "UNSUPPORTED_STEPS", "convert"]

_CORE = "prefect.deployments.steps"
STEP_NAMES: dict[str, str] = {
    **{
        f"{_CORE}{module}.{name}": name
        for module in ("", ".pull", ".utility")
        for name in (
            "git_clone",
            "set_working_directory",
            "run_shell_script",
            "pip_install_requirements",
            "pull_from_remote_storage",
        )
    },
    f"{_CORE}.pull.agit_clone": "git_clone",
    "prefect_aws.deployments.steps.pull_from_s3": "pull_from_s3",
    "prefect_aws.deployments.steps.push_to_s3": "push_to_s3",
    "prefect_gcp.deployments.steps.pull_from_gcs": "pull_from_gcs",
    "prefect_gcp.deployments.steps.push_to_gcs": "push_to_gcs",
    "prefect_azure.deployments.steps.pull_from_azure_blob_storage": (
        "pull_from_azure_blob_storage"
    ),
    "prefect_azure.deployments.steps.push_to_azure_blob_storage": "push_to_azure_blob_storage",
    "prefect_docker.deployments.steps.build_docker_image": "build_docker_image",
    "prefect_docker.deployments.steps.push_docker_image": "push_docker_image",
}
"""Prefect's fully qualified step name → Conveyor's step."""

UNSUPPORTED_STEPS: dict[str, str] = {
    f"{_CORE}{module}.pull_with_block": (
        "Conveyor keeps no storage blocks: name the storage with git_clone or pull_from_s3 "
        "(and saved credentials) instead"
    )
    for module in ("", ".pull")
}

_TOP = {"name", "prefect-version", "prefect_version", "definitions", "build", "push", "pull"}
_DEPLOYMENT = {
    "name",
    "entrypoint",
    "parameters",
    "tags",
    "description",
    "version",
    "work_pool",
    "build",
    "push",
    "pull",
    "job_variables",
    "follow_ref",
}
_DROPPED = {"flow_name", "paused", "enforce_parameter_schema", "version_type"}
_EMPTY_ONLY = {"schedules", "triggers", "concurrency_limit", "schedule"}


def convert(
    raw: Mapping[str, Any], *, file: Path, numbers: Sequence[int] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``prefect.yaml`` content → ``conveyor.yaml`` content, and notes. ``numbers``: the places
    in the file of the deployments in ``raw`` (when only some were kept), for messages."""
    notes: list[str] = []
    where = file.name
    unknown = sorted(set(raw) - _TOP - {"deployments"})
    if unknown:
        raise ConfigError(
            f"{where}: {unknown[0]} has no Conveyor equivalent",
            hint="remove it, or write a conveyor.yaml (see `conveyor init`)",
        )
    out: dict[str, Any] = {k: v for k, v in raw.items() if k in ("name", "definitions")}
    if raw.get("prefect-version") or raw.get("prefect_version"):
        out["prefect-version"] = str(raw.get("prefect-version") or raw.get("prefect_version"))
    folder = file.resolve().parent
    for section in ("build", "push", "pull"):
        if raw.get(section) is not None:
            out[section] = _steps(raw[section], f"{where}: {section}", folder, notes)
    deployments = raw.get("deployments") or []
    if not isinstance(deployments, list):
        raise ConfigError(f"{where}: deployments must be a list")
    places = numbers if numbers is not None else range(len(deployments))
    out["deployments"] = [
        _deployment(d, f"{where}: deployments[{i}]", folder, notes)
        for i, d in zip(places, deployments, strict=True)
    ]
    _check_templates(out, where)
    return out, notes


def _deployment(raw: Any, where: str, folder: Path, notes: list[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    name = raw.get("name")
    where = f"{where} ({name})" if name else where
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _EMPTY_ONLY:
            if value:
                raise ConfigError(
                    f"{where}: {key} is not supported by Conveyor",
                    hint="start runs with `conveyor run` or the API; remove the key to deploy",
                )
        elif key == "enforce_parameter_schema" and value is False:
            raise ConfigError(
                f"{where}: enforce_parameter_schema: false is not supported",
                hint="Conveyor always checks parameters against the flow's signature",
            )
        elif key in _DROPPED:
            continue
        elif key == "version":
            if value is not None:
                notes.append(
                    f"{where}: version {value!r} is not kept (a Conveyor deployment's version "
                    "is the code version it pins)"
                )
        elif key not in _DEPLOYMENT:
            raise ConfigError(f"{where}: {key} has no Conveyor equivalent", hint="remove it")
        elif key in ("build", "push", "pull"):
            if value is not None:
                out[key] = _steps(value, f"{where}: {key}", folder, notes)
        elif key == "work_pool" and isinstance(value, Mapping):
            pool = {k: v for k, v in value.items() if v is not None}
            extra = sorted(set(pool) - {"name", "work_queue_name", "job_variables"})
            if extra:
                raise ConfigError(f"{where}: work_pool.{extra[0]} has no Conveyor equivalent")
            out[key] = pool
        elif value is not None:
            out[key] = value
    return out


def _steps(raw: Any, where: str, folder: Path, notes: list[str]) -> list[dict[str, Any]]:
    from conveyor.steps import STEPS

    if not isinstance(raw, list):
        raise ConfigError(f"{where} must be a list of steps")
    steps: list[dict[str, Any]] = []
    for step in raw:
        if not isinstance(step, Mapping) or len(step) != 1:
            raise ConfigError(f"{where}: a step is a mapping with one key, not {step!r:.60}")
        ((name, args),) = step.items()
        name = str(name)
        if name in UNSUPPORTED_STEPS:
            raise ConfigError(
                f"{where}: step {name} is not supported", hint=UNSUPPORTED_STEPS[name]
            )
        ours = STEP_NAMES.get(name, name)
        if "." in ours:
            raise ConfigError(
                f"{where}: step {name} has no Conveyor equivalent",
                hint=f"Conveyor's steps: {', '.join(STEPS.names())}",
            )
        if ours not in STEPS:
            raise ConfigError(
                f"{where}: step {name} maps to {ours}, which this installation of Conveyor "
                "does not have",
                hint="upgrade Conveyor, or install the extra that provides it",
            )
        arguments = dict(args or {})
        requires = arguments.pop("requires", None)
        if requires:
            notes.append(f"{where}: {ours}: requires {requires!r} is not needed (built in)")
        if ours == "set_working_directory":
            relative = _relative_directory(arguments, where, folder)
            if relative is None:
                notes.append(f"{where}: set_working_directory to the project folder dropped")
                continue
            arguments = relative
        steps.append({ours: arguments})
    return steps


def _relative_directory(
    arguments: dict[str, Any], where: str, folder: Path
) -> dict[str, Any] | None:
    directory = arguments.get("directory")
    if not isinstance(directory, str) or not Path(directory).is_absolute():
        return arguments
    path = Path(directory).resolve()
    if path == folder:
        return None
    if not path.is_relative_to(folder):
        raise ConfigError(
            f"{where}: set_working_directory {directory} is outside the project folder",
            hint="give a directory relative to the code (the project is deployed as a whole)",
        )
    return {**arguments, "directory": path.relative_to(folder).as_posix()}


_VARIABLE = re.compile(r"\{\{\s*prefect\.variables\.[^{}]*?\s*\}\}")


def _check_templates(value: Any, where: str, path: str = "") -> None:
    """Refuse ``{{ prefect.variables.NAME }}`` anywhere, naming where it is and only the
    template (the rest of the string may hold a literal secret)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_templates(item, where, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            _check_templates(item, where, f"{path}[{number}]")
    elif isinstance(value, str) and "prefect.variables." in value:
        found = _VARIABLE.search(value)
        shown = found.group(0) if found else "{{ prefect.variables.* }}"
        raise ConfigError(
            f"{where}: {path}: {shown} is not supported (Conveyor has no variables)",
            hint="use ${NAME} (a secret: `conveyor secret set NAME`) or {{ $ENV_VAR }}",
        )
