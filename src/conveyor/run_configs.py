"""Run configs: how the first generation said where a flow's runs go, as job variables.

```python
flow.run_config = DockerRun(image="repo/name:tag", env={"MODE": "prod"}, labels=["gpu"])
flow.register()   # job_variables: {"image": "repo/name:tag", "env": {...}, "labels": [...]}
```

`RunConfig.job_variables` is what registration merges into the deployment's job variables:
``image``, ``env`` (values may be ``${NAME}`` templates, resolved on the worker) and ``labels``
(a run is claimed only by a worker carrying all of them), plus the container settings of
`DockerRun` and `KubernetesRun`, as the variables of the ``docker`` and ``kubernetes`` pools'
base job templates (`conveyor._jobs`; ``conveyor pool preview`` shows what a pool submits):

- `DockerRun` ``host_config``: ``mem_limit``, ``nano_cpus`` (as ``cpus``), ``network_mode``,
  ``auto_remove``; ``ports`` and other host settings are refused (the docker pool publishes no
  ports; a pool's own base job template is the place for more);
- `KubernetesRun`: ``cpu_*`` / ``memory_*`` (numbers become Kubernetes quantities, text),
  ``service_account_name``, ``image_pull_policy``, one ``image_pull_secrets`` name (as
  ``registry_credentials``); ``job_template`` is refused (customise the pool's base job
  template instead).

A process pool uses ``env`` and ``labels``; the image is for container pools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor._names import check_labels
from conveyor.errors import ConfigError

__all__ = ["DockerRun", "KubernetesRun", "LocalRun", "RunConfig", "UniversalRun"]


class RunConfig:
    """``env`` and ``labels``, which every run config has; subclasses add theirs."""

    def __init__(
        self, *, env: Mapping[str, str] | None = None, labels: Sequence[str] | None = None
    ) -> None:
        if env is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in dict(env).items()
        ):
            raise ConfigError(f"{type(self).__name__} env must map names to strings")
        self.env = dict(env or {})
        self.labels = sorted(set(check_labels(labels)))

    def extra(self) -> dict[str, Any]:
        """The subclass's job variables (None values left out)."""
        return {}

    def job_variables(self) -> dict[str, Any]:
        variables = {k: v for k, v in self.extra().items() if v is not None}
        if self.env:
            variables["env"] = dict(self.env)
        if self.labels:
            variables["labels"] = list(self.labels)
        return variables

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.job_variables()!r})"


class UniversalRun(RunConfig):
    """Any pool: only ``env`` and ``labels`` (the default when a flow has no run config)."""


class LocalRun(RunConfig):
    """A process pool on the worker's machine."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        if working_dir is not None:
            raise ConfigError(
                "LocalRun(working_dir=...) is not supported: a run works in a copy of its "
                "code, so its imports work",
                hint="read and write files by absolute path, or chdir inside the flow",
            )


_HOST_CONFIG = {"mem_limit", "nano_cpus", "network_mode", "auto_remove"}


class DockerRun(RunConfig):
    """A container from ``image`` on a docker pool (``host_config``: see the module docstring)."""

    def __init__(
        self,
        image: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        labels: Sequence[str] | None = None,
        ports: Sequence[int] | None = None,
        host_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        if ports:
            raise ConfigError(
                "DockerRun(ports=...) is not supported: the docker pool publishes no ports",
                hint="a flow run reaches services, it does not serve; or give the pool a base "
                "job template of your own",
            )
        unknown = sorted(set(host_config or {}) - _HOST_CONFIG)
        if unknown:
            raise ConfigError(
                f"DockerRun host_config {', '.join(unknown)} is not supported",
                hint=f"the docker pool takes {', '.join(sorted(_HOST_CONFIG))}; "
                "give the pool a base job template of your own for more",
            )
        self.image = image
        self.host_config = dict(host_config or {})

    def extra(self) -> dict[str, Any]:
        host = self.host_config
        nano = host.get("nano_cpus")
        return {
            "image": self.image,
            "mem_limit": None if host.get("mem_limit") is None else str(host["mem_limit"]),
            "cpus": None if nano is None else float(nano) / 1e9,
            "network_mode": host.get("network_mode"),
            "auto_remove": host.get("auto_remove"),
        }


class KubernetesRun(RunConfig):
    """A Kubernetes job from ``image`` (resources and the rest go to the kubernetes pool)."""

    def __init__(
        self,
        image: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        labels: Sequence[str] | None = None,
        cpu_limit: float | str | None = None,
        cpu_request: float | str | None = None,
        memory_limit: str | None = None,
        memory_request: str | None = None,
        service_account_name: str | None = None,
        image_pull_policy: str | None = None,
        image_pull_secrets: Sequence[str] | None = None,
        job_template: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        if job_template is not None:
            raise ConfigError(
                "KubernetesRun(job_template=...) is not supported",
                hint="give the kubernetes pool a base job template of your own "
                "(conveyor pool create NAME --type kubernetes --base-job-template FILE)",
            )
        secrets = list(image_pull_secrets or [])
        if len(secrets) > 1:
            raise ConfigError("KubernetesRun takes one image_pull_secrets name")
        self.image = image

        def quantity(value: float | str | None) -> str | None:
            return None if value is None else str(value)

        self.settings: dict[str, Any] = {
            "cpu_limit": quantity(cpu_limit),
            "cpu_request": quantity(cpu_request),
            "memory_limit": memory_limit,
            "memory_request": memory_request,
            "service_account_name": service_account_name,
            "image_pull_policy": image_pull_policy,
            "registry_credentials": secrets[0] if secrets else None,
        }

    def extra(self) -> dict[str, Any]:
        return {"image": self.image, **self.settings}
