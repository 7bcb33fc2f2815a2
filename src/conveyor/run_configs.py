"""Run configs: how the first generation said where a flow's runs go, as job variables.

```python
flow.run_config = DockerRun(image="repo/name:tag", env={"MODE": "prod"}, labels=["gpu"])
flow.register()   # job_variables: {"image": "repo/name:tag", "env": {...}, "labels": [...]}
```

`RunConfig.job_variables` is what registration merges into the deployment's job variables:
``image``, ``env`` (values may be ``${NAME}`` templates, resolved on the worker) and ``labels``
(a run is claimed only by a worker carrying all of them), plus the container settings of
`DockerRun` and `KubernetesRun`, passed as they are to the pool's executor (the ``docker`` and
``kubernetes`` pools come with the image issue). A process pool uses ``env`` and ``labels``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
        self.labels = sorted(set(labels or []))

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


class DockerRun(RunConfig):
    """A container from ``image`` (``ports`` and ``host_config`` go to the docker pool)."""

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
        self.image = image
        self.ports = list(ports) if ports else None
        self.host_config = dict(host_config) if host_config else None

    def extra(self) -> dict[str, Any]:
        return {"image": self.image, "ports": self.ports, "host_config": self.host_config}


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
        job_template: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env=env, labels=labels)
        self.image = image
        self.settings: dict[str, Any] = {
            "cpu_limit": cpu_limit,
            "cpu_request": cpu_request,
            "memory_limit": memory_limit,
            "memory_request": memory_request,
            "service_account_name": service_account_name,
            "image_pull_policy": image_pull_policy,
            "job_template": dict(job_template) if job_template else None,
        }

    def extra(self) -> dict[str, Any]:
        return {"image": self.image, **self.settings}
