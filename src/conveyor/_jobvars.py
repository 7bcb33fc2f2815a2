"""Job variables of process pools: their JSON schema, pool defaults, and what the worker applies.

A run carries its *effective* job variables (``run.job_variables``): the pool's defaults (its
base job template) under the deployment's own, merged by `merge_job_variables` (``env`` key by
key, so a pool-wide ``EXTRA_PIP_PACKAGES`` survives a deployment that sets other variables).
The process executor reads them through `process_options`:

=====================  =========================================================================
``env``                added to the flow's environment (templates resolved on the worker)
``working_dir``        the flow's working directory: relative to the code's working directory
                       (inside the code), or an absolute directory that exists on the worker;
                       the flow still imports from its code
``command``            the command that starts the flow (string or list); it must run
                       ``python -m conveyor.worker.child`` (Prefect's ``python -m prefect.engine``
                       is read as that), so wrappers work: ``nice -n 10 python -m ...``,
                       ``env X=1 python -m ...``. ``python`` there is the run's interpreter (its
                       environment's, when it has one); the run's control directory is appended
``stream_output``      false: the flow's stdout and stderr are not sent to the run's logs
                       (``logging`` records still are)
``EXTRA_PIP_PACKAGES`` packages (separated by blanks) installed into the run's environment, like
                       ``env.EXTRA_PIP_PACKAGES`` and the worker's own ``EXTRA_PIP_PACKAGES``
``labels``             worker labels the run needs (the server routes on them)
=====================  =========================================================================

`PROCESS_JOB_VARIABLES` is the JSON schema (draft 2020-12) of these; a value of the wrong type is
one `ConfigError` line naming the variable.

The same few functions say what a run gets wherever it is asked — the server creating a run, the
worker running it, the deploy checking it beforehand: `effective_job_variables` (the pool's
defaults under the deployment's own), `job_env` (the ``env`` variable as text) and
`run_environ` (that over the worker's environment without its ``CONVEYOR_*`` settings,
`child_environ`).
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError

__all__ = [
    "CHILD_MODULE",
    "PROCESS_JOB_VARIABLES",
    "WORKER_ONLY_PREFIX",
    "ProcessOptions",
    "child_command",
    "child_environ",
    "effective_job_variables",
    "job_env",
    "merge_job_variables",
    "process_options",
    "resolve_working_dir",
    "run_environ",
    "schema_defaults",
]

CHILD_MODULE = "conveyor.worker.child"
_PREFECT_ENGINE = "prefect.engine"

PROCESS_JOB_VARIABLES: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Process pool job variables",
    "type": "object",
    "properties": {
        "env": {
            "title": "Environment variables",
            "type": "object",
            "additionalProperties": {"type": ["string", "null"]},
            "default": {},
        },
        "working_dir": {
            "title": "Working directory",
            "description": "The flow's working directory (relative: inside the code).",
            "type": ["string", "null"],
            "default": None,
        },
        "command": {
            "title": "Command",
            "description": "Starts the flow; must run `python -m conveyor.worker.child`.",
            "type": ["string", "array", "null"],
            "items": {"type": "string"},
            "default": None,
        },
        "stream_output": {
            "title": "Stream output",
            "description": "Send the flow's stdout and stderr to the run's logs.",
            "type": "boolean",
            "default": True,
        },
        "EXTRA_PIP_PACKAGES": {
            "title": "Extra pip packages",
            "description": "Installed into the run's environment (separated by blanks).",
            "type": ["string", "null"],
            "default": None,
        },
        "labels": {
            "title": "Labels",
            "type": "array",
            "items": {"type": "string"},
            "default": [],
        },
    },
}
"""The JSON schema of a process pool's job variables (other keys are allowed and ignored)."""


WORKER_ONLY_PREFIX = "CONVEYOR_"
"""Variables with this prefix configure the worker itself and never reach a run."""


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the worker's own ``CONVEYOR_*`` variables."""
    return {k: v for k, v in environ.items() if not k.upper().startswith(WORKER_ONLY_PREFIX)}


def job_env(job_variables: Mapping[str, Any]) -> dict[str, Any]:
    """The job variables' ``env`` (templates already resolved) as text: None is ``""``, a
    `Secret` stays one; nothing when there is no ``env`` mapping."""
    from conveyor.secrets import Secret

    env = job_variables.get("env")
    if not isinstance(env, Mapping):
        return {}
    return {
        str(key): value if isinstance(value, Secret) else "" if value is None else str(value)
        for key, value in env.items()
    }


def run_environ(environ: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run's processes: the run's ``env`` (`job_env`, revealed) over the
    worker's ``environ`` without the worker's own settings (`child_environ`). Its index
    settings and ``EXTRA_PIP_PACKAGES`` decide the run's environment (`conveyor.envs`)."""
    return {**child_environ(environ), **env}


def effective_job_variables(
    template: Mapping[str, Any] | None, job_variables: Mapping[str, Any]
) -> dict[str, Any]:
    """A run's job variables: the deployment's ``job_variables`` over the defaults of its
    pool's base job ``template`` (`merge_job_variables`); without a template, its own."""
    if not isinstance(template, Mapping):
        return dict(job_variables)
    variables = template.get("variables")
    defaults = schema_defaults(variables) if isinstance(variables, Mapping) else {}
    return merge_job_variables(defaults, job_variables)


def merge_job_variables(
    defaults: Mapping[str, Any], job_variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The deployment's ``job_variables`` over the pool's ``defaults``; ``env`` merged by key."""
    merged = {**copy.deepcopy(dict(defaults)), **copy.deepcopy(dict(job_variables))}
    base_env, own_env = defaults.get("env"), job_variables.get("env")
    if isinstance(base_env, Mapping) and isinstance(own_env, Mapping):
        merged["env"] = {**base_env, **own_env}
    return merged


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``default`` of every property of a job-variables schema."""
    properties = schema.get("properties") or {}
    return {
        name: copy.deepcopy(spec["default"])
        for name, spec in properties.items()
        if isinstance(spec, Mapping) and "default" in spec
    }


@dataclass(frozen=True)
class ProcessOptions:
    """What the process executor takes from a run's job variables."""

    working_dir: str | None = None
    command: tuple[str, ...] = ()
    stream_output: bool = True
    extra_pip_packages: str | None = None


def process_options(job_variables: Mapping[str, Any]) -> ProcessOptions:
    """Check ``job_variables`` against `PROCESS_JOB_VARIABLES` and read them."""
    from jsonschema import Draft202012Validator

    errors = sorted(
        Draft202012Validator(PROCESS_JOB_VARIABLES).iter_errors(dict(job_variables)),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "job_variables"
        raise ConfigError(
            f"job variable {where}: {first.message}",
            hint="see the job variables of process pools in `conveyor._jobvars`",
        )
    command = job_variables.get("command")
    argv = tuple(shlex.split(command) if isinstance(command, str) else command or ())
    if argv:
        _child_index(argv)  # refused now, before any code is fetched
    return ProcessOptions(
        working_dir=job_variables.get("working_dir") or None,
        command=argv,
        stream_output=bool(job_variables.get("stream_output", True)),
        extra_pip_packages=job_variables.get("EXTRA_PIP_PACKAGES") or None,
    )


def _child_index(argv: Sequence[str]) -> int:
    """The index of ``-m`` before the child module (or Prefect's engine) in ``argv``."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] in (CHILD_MODULE, _PREFECT_ENGINE):
            return i
    raise ConfigError(
        f"job variable command {shlex.join(argv)!r} does not start the flow",
        hint=f"end it with `python -m {CHILD_MODULE}`, e.g. nice -n 10 python -m {CHILD_MODULE}",
    )


def child_command(command: Sequence[str], *, python: str, control: Path) -> list[str]:
    """The argv that starts the run's child: ``command`` (or the default) with ``python`` as
    the interpreter and the control directory appended."""
    if not command:
        return [python, "-m", CHILD_MODULE, str(control)]
    argv = list(command)
    at = _child_index(argv)
    argv[at + 1] = CHILD_MODULE
    if at > 0 and Path(argv[at - 1]).name.startswith("python"):
        argv[at - 1] = python
    else:
        argv.insert(at, python)
    return [*argv, str(control)]


def resolve_working_dir(value: str | None, *, cwd: Path, code_dir: Path) -> Path:
    """The flow's working directory for job variable ``working_dir`` (``cwd`` when unset)."""
    if not value:
        return cwd
    path = Path(value).expanduser()
    if path.is_absolute():
        if not path.is_dir():
            raise ConfigError(
                f"job variable working_dir: {value} is not a directory on this worker",
                hint="create it, or give a directory relative to the code",
            )
        return path
    resolved = (cwd / path).resolve()
    root = code_dir.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ConfigError(
            f"job variable working_dir: {value} leaves the run's code directory",
            hint="give an absolute directory, or one inside the code",
        )
    if not resolved.is_dir():
        raise ConfigError(
            f"job variable working_dir: {value} does not exist in the code",
            hint="check it against the deployed tree (`conveyor runs code RUN`)",
        )
    return resolved
