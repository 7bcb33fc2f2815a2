"""What container pools submit: the rendered job, as a Docker ``containers.run`` request or a
Kubernetes ``batch/v1`` Job, carrying the run's code *reference* and secret *names* only.

The container runs ``python -m conveyor.worker.container`` (`conveyor.worker.container`), which
fetches the pinned code itself (through its own code cache, verified), resolves the secret
templates named in ``CONVEYOR_SECRET_ENV`` from the server's secret store, runs the flow and
prints one ``CONVEYOR_OUTCOME {json}`` line the executor reads. The environment it gets:

==============================  ====================================================
``CONVEYOR_RUN_ID``             the run (parameters and pull steps come from the API)
``CONVEYOR_RUN_SOURCE``         the deployment's secret-free source spec (JSON)
``CONVEYOR_RUN_VERSION``        the version to fetch (re-resolved when following a ref)
``CONVEYOR_RUN_ENTRYPOINT``     the flow
``CONVEYOR_API_URL``            the server
``CONVEYOR_API_KEY``            Docker: the worker's key; Kubernetes: a ``secretKeyRef``
``CONVEYOR_SECRET_ENV``         ``{"VAR": "${NAME}"}``: templates, resolved in the container
==============================  ====================================================

Plain ``env`` job variables are passed as they are. The image is the ``image`` job variable:
the deployment's own image, pinned by digest, when deploy built it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import ConfigError
from conveyor.secrets import REDACTED, template_refs

__all__ = [
    "CONTAINER_COMMAND",
    "OUTCOME_PREFIX",
    "ContainerJob",
    "container_job",
    "docker_request",
    "kubernetes_job",
    "parse_outcome",
]

CONTAINER_COMMAND = ("python", "-m", "conveyor.worker.container")
OUTCOME_PREFIX = "CONVEYOR_OUTCOME "


@dataclass(frozen=True)
class ContainerJob:
    """The rendered job of one run, before it becomes a Docker or Kubernetes request."""

    run_id: str
    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    secret_env: dict[str, str]
    labels: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


_SET_BY_WORKER = frozenset(
    {
        "CONVEYOR_API_KEY",
        "CONVEYOR_API_URL",
        "CONVEYOR_DEPLOYMENT_NAME",
        "CONVEYOR_FLOW_NAME",
        "CONVEYOR_RUN_ENTRYPOINT",
        "CONVEYOR_RUN_ID",
        "CONVEYOR_RUN_SOURCE",
        "CONVEYOR_RUN_VERSION",
        "CONVEYOR_SECRET_ENV",
    }
)
"""``env`` names the container gets from the worker: a job variable there would be overwritten
(Docker) or doubled in the Job, a plain API key written into the manifest (Kubernetes)."""


def _is_template(value: str) -> bool:
    return any(ref.kind in ("secret", "env") for ref in template_refs(value))


def container_job(
    configuration: Mapping[str, Any],
    *,
    run_id: str,
    source: Mapping[str, Any],
    version: str,
    entrypoint: str,
    flow_name: str,
    deployment_name: str,
    api_url: str | None,
    attempt: int = 1,
) -> ContainerJob:
    """The job for one run (its ``attempt``) from a rendered job configuration
    (`conveyor._jobs.render`)."""
    image = configuration.get("image")
    if not isinstance(image, str) or not image:
        raise ConfigError("the job has no image", hint="set the image job variable")
    command_value = configuration.get("command")
    if isinstance(command_value, str) and command_value:
        import shlex

        command = tuple(shlex.split(command_value))
    elif isinstance(command_value, list) and command_value:
        command = tuple(str(c) for c in command_value)
    else:
        command = CONTAINER_COMMAND
    env: dict[str, str] = {}
    secret_env: dict[str, str] = {}
    taken = sorted(set(configuration.get("env") or {}) & _SET_BY_WORKER)
    if taken:
        raise ConfigError(
            f"job variable env.{taken[0]} is set by the worker for every container",
            hint="remove it from env (the API key comes from the worker, or on Kubernetes "
            "from the api_key_secret_name secret)",
        )
    for key, value in (configuration.get("env") or {}).items():
        text = "" if value is None else str(value)
        (secret_env if _is_template(text) else env)[str(key)] = text
    env.update(
        {
            "CONVEYOR_RUN_ID": run_id,
            "CONVEYOR_RUN_SOURCE": json.dumps(dict(source), sort_keys=True),
            "CONVEYOR_RUN_VERSION": version,
            "CONVEYOR_RUN_ENTRYPOINT": entrypoint,
            "CONVEYOR_FLOW_NAME": flow_name,
            "CONVEYOR_DEPLOYMENT_NAME": deployment_name,
        }
    )
    if api_url:
        env["CONVEYOR_API_URL"] = api_url
    if secret_env:
        env["CONVEYOR_SECRET_ENV"] = json.dumps(secret_env, sort_keys=True)
    labels = {"conveyor.run-id": run_id, "conveyor.deployment": f"{flow_name}/{deployment_name}"}
    user_labels = configuration.get("labels") or []
    if user_labels:
        labels["conveyor.labels"] = ",".join(str(x) for x in user_labels)
    return ContainerJob(
        run_id, image, command, env, secret_env, labels, dict(configuration), attempt=attempt
    )


def docker_request(job: ContainerJob, *, api_key: str | None) -> dict[str, Any]:
    """Keyword arguments of ``docker.containers.run`` (the API key as ``****`` unless given).

    The container is named after the run, and after its attempt from the second on: a container
    kept by ``auto_remove: false`` does not take the name a retry needs. (``auto_remove`` is not
    the SDK's: the executor removes the container itself once it has read its logs.)"""
    config = job.config
    env = dict(job.env)
    env["CONVEYOR_API_KEY"] = api_key if api_key is not None else REDACTED
    request: dict[str, Any] = {
        "image": job.image,
        "command": list(job.command),
        "environment": env,
        "labels": dict(job.labels),
        "detach": True,
        "name": f"conveyor-{job.run_id[:12]}" + (f"-{job.attempt}" if job.attempt > 1 else ""),
    }
    if config.get("mem_limit"):
        request["mem_limit"] = config["mem_limit"]
    if config.get("cpus"):
        request["nano_cpus"] = int(float(config["cpus"]) * 1e9)
    if config.get("network_mode"):
        request["network_mode"] = config["network_mode"]
    return request


def _k8s_label(value: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in value)[:63]
    return cleaned.strip("-_.") or "x"


def kubernetes_job(job: ContainerJob) -> dict[str, Any]:
    """The ``batch/v1`` Job manifest of the run (checked by `validate_kubernetes_job`)."""
    config = job.config
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(job.env.items())]
    env.append(
        {
            "name": "CONVEYOR_API_KEY",
            "valueFrom": {
                "secretKeyRef": {
                    "name": str(config.get("api_key_secret_name") or "conveyor-api-key"),
                    "key": "api-key",
                    "optional": True,
                }
            },
        }
    )
    resources: dict[str, dict[str, str]] = {}
    for kind, prefix in (("requests", "request"), ("limits", "limit")):
        for resource in ("cpu", "memory"):
            value = config.get(f"{resource}_{prefix}")
            if value:
                resources.setdefault(kind, {})[resource] = str(value)
    container: dict[str, Any] = {
        "name": "flow",
        "image": job.image,
        "command": list(job.command),
        "env": env,
    }
    if config.get("image_pull_policy"):
        container["imagePullPolicy"] = config["image_pull_policy"]
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if config.get("service_account_name"):
        pod["serviceAccountName"] = config["service_account_name"]
    if config.get("registry_credentials"):
        pod["imagePullSecrets"] = [{"name": str(config["registry_credentials"])}]
    labels = {
        "conveyor.dev/run-id": _k8s_label(job.run_id),
    }
    annotations = dict(job.labels)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if config.get("finished_job_ttl") is not None:
        spec["ttlSecondsAfterFinished"] = int(config["finished_job_ttl"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"conveyor-{_k8s_label(job.run_id)[:40].lower()}",
            "namespace": str(config.get("namespace") or "default"),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def validate_kubernetes_job(manifest: Mapping[str, Any]) -> Any:
    """The manifest as the official client's ``V1Job`` model; `ConfigError` when the models
    refuse it or drop a field they do not know (a typo in a template)."""
    try:
        from kubernetes.client import ApiClient
    except ImportError as exc:
        from conveyor.errors import MissingDependency

        raise MissingDependency(
            "kubernetes", extra="kubernetes", feature="kubernetes pools"
        ) from exc
    api: Any = ApiClient()
    try:
        model = api._ApiClient__deserialize(dict(manifest), "V1Job")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the Kubernetes Job is not valid: {exc}") from None
    round_trip = api.sanitize_for_serialization(model)
    if round_trip != manifest:
        raise ConfigError(
            "the Kubernetes Job has fields the client's models do not know",
            hint="check the pool's job_configuration against the batch/v1 Job schema",
        )
    return model


def parse_outcome(lines: list[str]) -> dict[str, Any] | None:
    """The last ``CONVEYOR_OUTCOME {json}`` line a container printed, parsed."""
    for line in reversed(lines):
        if line.startswith(OUTCOME_PREFIX):
            try:
                found = json.loads(line[len(OUTCOME_PREFIX) :])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None
