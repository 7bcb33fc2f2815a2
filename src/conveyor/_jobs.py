"""Base job templates: what a pool submits for a run, and the job variables that fill it in.

A template is Prefect's shape::

    {"job_configuration": {"image": "{{ image }}", "env": "{{ env }}", ...},
     "variables": {"type": "object", "properties": {"image": {"type": "string", ...}, ...}}}

``variables`` is a JSON Schema (draft 2020-12) of the job variables; a deployment's
``job_variables`` are checked against it (`check_job_variables`), the schema's defaults filled
in, and `render` replaces each ``{{ name }}`` placeholder in ``job_configuration`` with the
variable's value (a placeholder that is a whole string takes the value as it is: a dict, a list,
a number; inside a longer string it is written as text). The placeholders are the one template
grammar of `conveyor.secrets` (output references); secret templates in values (``${TOKEN}``)
are left as written: the executor passes their *names*, never values, to where the run executes.

Every pool type has a default template (`default_template`): ``process`` (the schema
`conveyor._jobvars.PROCESS_JOB_VARIABLES`: ``command``, ``env``, ``working_dir``,
``stream_output``, ``EXTRA_PIP_PACKAGES``, ``labels``), ``docker`` and ``kubernetes`` (``image``,
``env``, ``command``, ``image_pull_policy``, resources, ``namespace``,
``service_account_name``, ``labels``, ``registry_credentials``). A pool stores its own template
when it was created with one; otherwise it uses its type's default.

A process worker does not render ``job_configuration``: it applies the run's job variables (the
pool's defaults under the deployment's own, `conveyor._jobvars`), and of those only the ones it
reads (`PROCESS_READS`). `process_job` is what it applies for a run, and `process_unapplied` the
keys of a pool's template or a deployment's job variables it would leave unused (``conveyor pool
preview`` prints the one and notes the other).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from conveyor._jobvars import (
    PROCESS_JOB_VARIABLES,
    effective_job_variables,
    merge_job_variables,
    process_options,
    schema_defaults,
)
from conveyor.errors import ConfigError
from conveyor.secrets import resolve_templates, template_ref, template_refs

__all__ = [
    "PROCESS_READS",
    "check_job_variables",
    "check_template",
    "default_template",
    "process_job",
    "process_unapplied",
    "render",
]

PROCESS_READS = (*sorted(PROCESS_JOB_VARIABLES["properties"]), "result_storage")
"""The job variables a process worker applies (``labels`` through the server, which gives the
run only to a worker that has them; ``result_storage`` where its pickled result goes)."""

_STR_OR_NULL = {"type": ["string", "null"], "default": None}
_ENV = {
    "title": "Environment variables",
    "type": "object",
    "additionalProperties": {"type": ["string", "null"]},
    "default": {},
}
_COMMAND = {
    "title": "Command",
    "description": "Overrides the command the run starts with (default: Conveyor's own).",
    "type": ["string", "array", "null"],
    "items": {"type": "string"},
    "default": None,
}
_LABELS = {
    "title": "Labels",
    "description": "Worker labels this deployment needs; also stamped on containers.",
    "type": "array",
    "items": {"type": "string"},
    "default": [],
}
_PULL = {
    "title": "Image pull policy",
    "enum": ["Always", "IfNotPresent", "Never", None],
    "default": "IfNotPresent",
}
_IMAGE = {
    "title": "Image",
    "description": "The image the run executes in (pinned by digest when deploy built it).",
    "type": "string",
    "default": "python:3.11-slim",
}
_CREDS = {
    "title": "Registry credentials",
    "description": "Name of saved docker credentials for pulling the image.",
    **_STR_OR_NULL,
}


def _variables(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


_TEMPLATES: dict[str, dict[str, Any]] = {
    "process": {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "working_dir": "{{ working_dir }}",
            "stream_output": "{{ stream_output }}",
            "EXTRA_PIP_PACKAGES": "{{ EXTRA_PIP_PACKAGES }}",
        },
        "variables": PROCESS_JOB_VARIABLES,
    },
    "docker": {
        "job_configuration": {
            "image": "{{ image }}",
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "image_pull_policy": "{{ image_pull_policy }}",
            "registry_credentials": "{{ registry_credentials }}",
            "mem_limit": "{{ mem_limit }}",
            "cpus": "{{ cpus }}",
            "network_mode": "{{ network_mode }}",
            "auto_remove": "{{ auto_remove }}",
        },
        "variables": _variables(
            {
                "image": _IMAGE,
                "command": _COMMAND,
                "env": _ENV,
                "labels": _LABELS,
                "image_pull_policy": _PULL,
                "registry_credentials": _CREDS,
                "mem_limit": {"title": "Memory limit (e.g. 512m)", **_STR_OR_NULL},
                "cpus": {"title": "CPUs", "type": ["number", "null"], "default": None},
                "network_mode": {"title": "Network mode", **_STR_OR_NULL},
                "auto_remove": {"type": "boolean", "default": True},
            }
        ),
    },
    "kubernetes": {
        "job_configuration": {
            "namespace": "{{ namespace }}",
            "image": "{{ image }}",
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "image_pull_policy": "{{ image_pull_policy }}",
            "service_account_name": "{{ service_account_name }}",
            "registry_credentials": "{{ registry_credentials }}",
            "cpu_request": "{{ cpu_request }}",
            "cpu_limit": "{{ cpu_limit }}",
            "memory_request": "{{ memory_request }}",
            "memory_limit": "{{ memory_limit }}",
            "finished_job_ttl": "{{ finished_job_ttl }}",
            "api_key_secret_name": "{{ api_key_secret_name }}",
        },
        "variables": _variables(
            {
                "namespace": {"type": "string", "default": "default"},
                "image": _IMAGE,
                "command": _COMMAND,
                "env": _ENV,
                "labels": _LABELS,
                "image_pull_policy": _PULL,
                "service_account_name": {"title": "Service account", **_STR_OR_NULL},
                "registry_credentials": {
                    **_CREDS,
                    "description": "Name of a Kubernetes image pull secret.",
                },
                "cpu_request": {"title": "CPU request (e.g. 500m)", **_STR_OR_NULL},
                "cpu_limit": {"title": "CPU limit", **_STR_OR_NULL},
                "memory_request": {"title": "Memory request (e.g. 256Mi)", **_STR_OR_NULL},
                "memory_limit": {"title": "Memory limit", **_STR_OR_NULL},
                "finished_job_ttl": {"type": ["integer", "null"], "minimum": 0, "default": 3600},
                "api_key_secret_name": {
                    "title": "Kubernetes secret holding CONVEYOR_API_KEY (key api-key)",
                    "type": "string",
                    "default": "conveyor-api-key",
                },
            }
        ),
    },
}


def default_template(pool_type: str) -> dict[str, Any]:
    """The base job template of a pool type (an empty one for types without variables)."""
    found = _TEMPLATES.get(pool_type)
    if found is None:
        return {"job_configuration": {}, "variables": _variables({})}
    return copy.deepcopy(found)


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return {ref.name for ref in template_refs(value) if ref.kind == "output" and not ref.key}
    if isinstance(value, Mapping):
        return set().union(*(_placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_placeholders(v) for v in value)) if value else set()
    return set()


_CONTAINER_TYPES = ("docker", "kubernetes")


def check_template(template: Any, *, pool_type: str | None = None) -> dict[str, Any]:
    """A usable template, or a one-line `ConfigError` naming what is wrong. For a container
    ``pool_type`` (whose executor reads known ``job_configuration`` keys only) a key it does
    not read is refused: a typo there would otherwise drop the setting without a word."""
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(template, Mapping):
        raise ConfigError("a base job template must be a JSON object")
    extra = sorted(set(template) - {"job_configuration", "variables"})
    if extra:
        raise ConfigError(
            f"base job template has unknown keys: {', '.join(extra)}",
            hint="a template has job_configuration and variables",
        )
    configuration = template.get("job_configuration", {})
    variables = template.get("variables", _variables({}))
    if not isinstance(configuration, Mapping) or not isinstance(variables, Mapping):
        raise ConfigError("job_configuration and variables must be JSON objects")
    if pool_type in _CONTAINER_TYPES:
        known = _TEMPLATES[pool_type]["job_configuration"]
        unread = sorted(set(configuration) - set(known))
        if unread:
            raise ConfigError(
                f"job_configuration has keys a {pool_type} pool does not use: {', '.join(unread)}",
                hint=f"its keys are: {', '.join(sorted(known))}",
            )
    try:
        Draft202012Validator.check_schema(dict(variables))
    except SchemaError as exc:
        raise ConfigError(f"variables is not a valid JSON Schema: {exc.message}") from None
    declared = set((variables.get("properties") or {}).keys())
    unknown = sorted(_placeholders(configuration) - declared)
    if unknown:
        raise ConfigError(
            f"job_configuration uses undeclared variables: {', '.join(unknown)}",
            hint="declare each {{ name }} under variables.properties",
        )
    checked = {"job_configuration": dict(configuration), "variables": dict(variables)}
    try:  # so a deploy without job variables has nothing left to check
        check_job_variables(checked, {})
    except ConfigError as exc:
        raise ConfigError(
            f"base job template: its defaults do not fit its variables: {exc.message}",
            hint="change the default, or the variable's schema",
        ) from None
    return checked


def check_job_variables(
    template: Mapping[str, Any], job_variables: Mapping[str, Any]
) -> dict[str, Any]:
    """``job_variables`` with the schema defaults filled in; `ConfigError` if they do not fit."""
    from jsonschema import Draft202012Validator

    schema = template.get("variables") or _variables({})
    properties = schema.get("properties") or {}
    values = {
        name: copy.deepcopy(spec.get("default"))
        for name, spec in properties.items()
        if isinstance(spec, Mapping)
    }
    values.update(job_variables)
    errors = sorted(
        Draft202012Validator(schema).iter_errors(values), key=lambda e: list(e.absolute_path)
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "job_variables"
        raise ConfigError(
            f"job variable {where}: {first.message}",
            hint="see the pool's variables with `conveyor pool ls --json`",
        )
    return values


def render(template: Mapping[str, Any], job_variables: Mapping[str, Any]) -> dict[str, Any]:
    """The job configuration with every ``{{ variable }}`` filled in (see the module docstring)."""
    values = check_job_variables(template, job_variables)
    configuration = template.get("job_configuration") or {}
    rendered = resolve_templates(dict(configuration), outputs=values, kinds={"output"})
    assert isinstance(rendered, dict)
    return rendered


def process_job(template: Mapping[str, Any], job_variables: Mapping[str, Any]) -> dict[str, Any]:
    """What a process worker applies for a run of a deployment with ``job_variables`` in a pool
    with ``template``: the variables it reads, as the run gets them (``result_storage`` only when
    set); a value it would refuse is the run's one-line `ConfigError`."""
    effective = effective_job_variables(template, job_variables)
    process_options(effective)
    values = merge_job_variables(schema_defaults(PROCESS_JOB_VARIABLES), effective)
    return {key: values[key] for key in PROCESS_READS if key in values}


def process_unapplied(
    template: Mapping[str, Any], job_variables: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """What a process worker leaves unused: the keys of the template's ``job_configuration``
    (which it does not render) that are not a bare ``{{ variable }}`` of one it reads, and the
    run's job variables it does not read."""
    configuration = template.get("job_configuration") or {}
    written = sorted(key for key, value in configuration.items() if not _applied(key, value))
    effective = effective_job_variables(template, job_variables)
    return written, sorted(set(effective) - set(PROCESS_READS))


def _applied(key: str, value: Any) -> bool:
    """Whether ``key: value`` of a process pool's ``job_configuration`` is what the worker does:
    a key it reads, holding nothing but that variable's placeholder."""
    ref = template_ref(value) if isinstance(value, str) else None
    return key in PROCESS_READS and ref is not None and ref.kind == "output" and ref.name == key
