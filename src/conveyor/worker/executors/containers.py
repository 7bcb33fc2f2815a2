"""`DockerExecutor` (``docker`` pools) and `KubernetesExecutor` (``kubernetes`` pools).

Both render the pool's base job template with the deployment's job variables
(`conveyor._jobs.render`), build the run's `ContainerJob` (code reference and secret names only,
see `conveyor.worker.executors.container`) and submit it:

- Docker: through the Docker SDK (extra ``docker``) to the engine of ``DOCKER_HOST`` or the
  default socket: pull (per ``image_pull_policy``, with the ``registry_credentials`` login),
  ``containers.run``, follow its output, wait, read the outcome line, remove it;
- Kubernetes: the Job manifest is checked against the official client's models (extra
  ``kubernetes``), then created in the configured cluster (kube config or in-cluster); the
  pod's log is read once it ends.

`Executor.check` runs when the worker starts, before it claims anything: a docker worker whose
engine does not answer a ping, or a kubernetes worker with neither an in-cluster nor a kube
config (or either without its SDK), refuses to start in one line instead of claiming runs
only to fail them (and use up their retries).

`submission` is exactly what would be submitted (``conveyor pool preview`` prints it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._jobs import default_template, process_job, render
from conveyor._jobvars import effective_job_variables
from conveyor.errors import ConfigError, MissingDependency
from conveyor.schemas import RunState
from conveyor.worker.executors.base import Executor, Interrupt, Outcome, RunSpec, Started
from conveyor.worker.executors.container import (
    ContainerJob,
    container_job,
    docker_request,
    kubernetes_job,
    parse_outcome,
    validate_kubernetes_job,
)
from conveyor.worker.logs import RunLogs

if TYPE_CHECKING:
    from conveyor.cache import CodeCache
    from conveyor.schemas import Pool
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings
    from conveyor.worker.executors.isolation import RunAs

logger = logging.getLogger(__name__)

__all__ = ["DockerExecutor", "KubernetesExecutor", "submission"]

POLL_SECONDS = 1.0
ENGINE_CHECK_SECONDS = 3
"""How long a docker worker's start waits for its engine to answer."""


def submission(
    pool_type: str,
    template: Mapping[str, Any],
    *,
    run_id: str,
    source: Mapping[str, Any],
    version: str,
    entrypoint: str,
    flow_name: str,
    deployment_name: str,
    job_variables: Mapping[str, Any],
    api_url: str | None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """What a pool of ``pool_type`` submits for a run of a deployment with ``job_variables``
    (its own: the run gets them over the pool's defaults, ``env`` merged key by key), the API
    key redacted unless given."""
    if pool_type == "process":  # it applies job variables, and renders nothing
        return {"type": "process", "job_configuration": process_job(template, job_variables)}
    configuration = render(template, effective_job_variables(template, job_variables))
    job = container_job(
        configuration,
        run_id=run_id,
        source=source,
        version=version,
        entrypoint=entrypoint,
        flow_name=flow_name,
        deployment_name=deployment_name,
        api_url=api_url,
    )
    if pool_type == "docker":
        return docker_request(job, api_key=api_key)
    if pool_type == "kubernetes":
        manifest = kubernetes_job(job)
        validate_kubernetes_job(manifest)
        return manifest
    raise ConfigError(f"pool type {pool_type!r} has no container submission")


class _ContainerExecutor(Executor):
    pool_type = ""

    def __init__(self, *, settings: Settings, secrets: SecretStore | None = None) -> None:
        self.settings = settings
        self.secrets = secrets
        self.template: Mapping[str, Any] = default_template(self.pool_type)

    @classmethod
    def for_worker(
        cls,
        *,
        cache: CodeCache,
        work_dir: Path,
        secrets: SecretStore | None,
        settings: Settings,
        run_as: RunAs | None = None,
    ) -> Executor:
        if run_as is not None:
            raise ConfigError(
                f"--run-as applies to process pools; a {cls.pool_type} pool's runs are "
                "isolated by their containers",
                hint="set the container's user in the pool's base job template instead",
            )
        return cls(settings=settings, secrets=secrets)

    def configure_pool(self, pool: Pool) -> None:
        self.template = pool.base_job_template or default_template(pool.type)

    def _job(self, spec: RunSpec) -> ContainerJob:
        configuration = render(self.template, spec.job_variables)
        return container_job(
            configuration,
            run_id=spec.run_id,
            source=spec.source,
            version=spec.version,
            entrypoint=spec.entrypoint,
            flow_name=str(spec.env.get("CONVEYOR_FLOW_NAME", "")),
            deployment_name=str(spec.env.get("CONVEYOR_DEPLOYMENT_NAME", "")),
            api_url=self.settings.api_url,
            attempt=spec.attempt,
        )

    def _api_key(self) -> str | None:
        key = self.settings.api_key
        return key.reveal() if key is not None else None


def _outcome(lines: list[str], spawned: float, returncode: int | None) -> Outcome:
    found = parse_outcome(lines)
    if found is None:
        return Outcome(
            state=RunState.CRASHED,
            spawned=spawned,
            error=f"container exited with code {returncode} without reporting a result",
            returncode=returncode,
        )
    state = RunState(found.get("state", "crashed"))
    return Outcome(
        state=state,
        spawned=spawned,
        entered=found.get("entered"),
        finished=found.get("finished"),
        error=found.get("error"),
        result=found.get("result"),
        returncode=returncode,
        timings=found.get("timings") or {},
    )


class DockerExecutor(_ContainerExecutor):
    """Runs each run in a container of the local Docker engine."""

    pool_type = "docker"

    def check(self) -> None:
        """The engine ``docker.from_env()`` finds answers a ping (3 s at most)."""
        try:
            import docker
        except ImportError as exc:
            raise MissingDependency("docker", extra="docker", feature="docker pools") from exc
        try:
            client = docker.from_env(timeout=ENGINE_CHECK_SECONDS)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # docker's errors, requests', OSError: one answer
            raise ConfigError(
                "no container engine is reachable for this worker's docker pool",
                hint="start Docker (or Podman's Docker socket), or set DOCKER_HOST to its address",
            ) from exc

    @contextlib.contextmanager
    def run(
        self, spec: RunSpec, *, logs: RunLogs, interrupt: Interrupt, started: Started
    ) -> Iterator[Outcome]:
        try:
            import docker
        except ImportError as exc:
            raise MissingDependency("docker", extra="docker", feature="docker pools") from exc
        job = self._job(spec)
        request = docker_request(job, api_key=self._api_key())
        client = docker.from_env()
        try:
            self._pull(client, job)
            if not started({}):
                yield Outcome(state=None, spawned=time.time(), error="lease lost")
                return
            spawned = time.time()
            container = client.containers.run(**request)
            lines: list[str] = []
            try:
                while container.status not in ("exited", "dead"):
                    if interrupt.wake.wait(POLL_SECONDS) and interrupt.reason is not None:
                        container.stop(timeout=10)
                    container.reload()
                for raw in container.logs(stream=False).decode(errors="replace").splitlines():
                    lines.append(raw)
                    if not raw.startswith("CONVEYOR_OUTCOME "):
                        logs.emit(raw, stream="container")
                code = container.attrs.get("State", {}).get("ExitCode")
            finally:
                _remove_unless_kept(container, job, logs)
            yield _outcome(lines, spawned, code)
        finally:
            client.close()

    def _pull(self, client: Any, job: ContainerJob) -> None:
        policy = job.config.get("image_pull_policy") or "IfNotPresent"
        if policy == "Never":
            return
        if policy == "IfNotPresent":
            with contextlib.suppress(Exception):
                client.images.get(job.image)
                return
        auth = None
        name = job.config.get("registry_credentials")
        if name:
            from conveyor.secrets import reveal
            from conveyor.sources.oci import parse_reference, registry_login

            login = registry_login(
                parse_reference(job.image).registry,
                credentials=str(name),
                store=self.secrets,
                environ={},
            )
            if login is not None:
                auth = {"username": login.username, "password": reveal(login.password)}
        client.images.pull(job.image, auth_config=auth)


def _remove_unless_kept(container: Any, job: ContainerJob, logs: RunLogs) -> None:
    """Remove the run's container, unless the job says ``auto_remove: false``: then it stays
    (stopped) for inspection, and the worker and the run's logs name it."""
    if job.config.get("auto_remove") is not False:
        with contextlib.suppress(Exception):
            container.remove(force=True)
        return
    logger.info("container kept run=%s container=%s (auto_remove: false)", job.run_id, container.id)
    logs.emit(
        f"container {container.id} kept (auto_remove: false); `docker rm {container.id}` "
        "removes it",
        stream="worker",
    )


class KubernetesExecutor(_ContainerExecutor):
    """Runs each run as a Kubernetes Job in the configured cluster."""

    pool_type = "kubernetes"

    def check(self) -> None:
        """A cluster is configured (in-cluster, or a kube config): nothing is asked of it."""
        _load_kubernetes_config()

    @contextlib.contextmanager
    def run(
        self, spec: RunSpec, *, logs: RunLogs, interrupt: Interrupt, started: Started
    ) -> Iterator[Outcome]:
        job = self._job(spec)
        manifest = kubernetes_job(job)
        validate_kubernetes_job(manifest)
        import importlib

        k8s: Any = importlib.import_module("kubernetes.client")
        _load_kubernetes_config()
        namespace = manifest["metadata"]["namespace"]
        batch, core = k8s.BatchV1Api(), k8s.CoreV1Api()
        if not started({}):
            yield Outcome(state=None, spawned=time.time(), error="lease lost")
            return
        spawned = time.time()
        batch.create_namespaced_job(namespace, manifest)
        name = manifest["metadata"]["name"]
        selector = f"job-name={name}"
        pod_name, phase = None, None
        while phase not in ("Succeeded", "Failed"):
            if interrupt.wake.wait(POLL_SECONDS) and interrupt.reason is not None:
                batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
                break
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            if pods:
                pod_name, phase = pods[0].metadata.name, pods[0].status.phase
        lines: list[str] = []
        if pod_name is not None:
            text = core.read_namespaced_pod_log(pod_name, namespace)
            for raw in str(text).splitlines():
                lines.append(raw)
                if not raw.startswith("CONVEYOR_OUTCOME "):
                    logs.emit(raw, stream="container")
        yield _outcome(lines, spawned, 0 if phase == "Succeeded" else 1)


def _load_kubernetes_config() -> None:
    """Load the cluster's configuration (in-cluster first, then the kube config): `ConfigError`
    when there is none, `MissingDependency` without the ``kubernetes`` package."""
    import importlib

    try:
        k8s_config: Any = importlib.import_module("kubernetes.config")
    except ImportError as exc:
        raise MissingDependency(
            "kubernetes", extra="kubernetes", feature="kubernetes pools"
        ) from exc
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()
        except (k8s_config.ConfigException, OSError) as exc:
            raise ConfigError(
                "no Kubernetes cluster is configured for this worker",
                hint="set KUBECONFIG to a kube config (or write ~/.kube/config), or run the "
                "worker in the cluster",
            ) from exc
