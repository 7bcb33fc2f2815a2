"""Containerised environments: the storage document's "non-Docker storage for containerized
environments" and "authentication" snippets (bucket swapped) register to the kubernetes and
docker pools; ``conveyor pool preview`` shows the environment's image and the secret by name
only; the run's process inside the container (``python -m conveyor.worker.container`` with the
docker pool's exact environment, as a local process: no engine here) fetches the flow from S3
with ``AWS_CREDENTIALS`` from the secret store and completes. Run configs map onto the pools'
base job templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.worker.executors.container import OUTCOME_PREFIX, validate_kubernetes_job
from conveyor.worker.executors.containers import submission
from e2e.conftest import command_env, conveyor, ok, one_line_error
from fixtures.blob_servers import MotoServer
from storage.conftest import leaks, python, write_script

pytestmark = [pytest.mark.service, pytest.mark.usefixtures("fresh_filesystems")]

SECRET_KEY = "container-secret-key-5e0c2b"

SEED_CONTAINERIZED = """
from conveyor import Flow
from conveyor.environments import LocalEnvironment
from conveyor.storage import S3

flow = Flow("example")

# set flow storage
flow.storage = S3(bucket="__BUCKET__")

# set flow environment
flow.environment = LocalEnvironment(metadata={"image": "repo/name:tag"})
"""

SEED_AUTHENTICATION = """
flow.storage = S3(bucket="__BUCKET__", secrets=["AWS_CREDENTIALS"])

flow.environment = LocalEnvironment(metadata={"image": "prefecthq/prefect"})
"""

AFTER_SEED = """
# --- the test's additions after the snippets: a task, then registration to both pools
from conveyor import task

@task
def credentials_seen() -> str:
    import json, os
    return json.loads(os.environ["AWS_CREDENTIALS"])["ACCESS_KEY"]

with flow:
    credentials_seen()

for pool in ("kubernetes", "docker"):
    flow.register(project_name=pool, labels=["s3-flow-storage"], work_pool=pool)
"""


def test_containerized_environment_snippets_fetch_from_s3_inside_the_container(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the two snippets (bucket swapped), AWS_CREDENTIALS in the secret store, both pools
    bucket = moto_server.new_bucket()
    client.create_pool("kubernetes", type="kubernetes")
    client.create_pool("docker", type="docker")
    client.set_secret(
        "AWS_CREDENTIALS", json.dumps({"ACCESS_KEY": "AKIASTORED", "SECRET_ACCESS_KEY": SECRET_KEY})
    )
    text = (SEED_CONTAINERIZED + SEED_AUTHENTICATION).replace("__BUCKET__", bucket) + AFTER_SEED
    script = write_script(tmp_path / "project" / "example.py", text)
    out = python(script, env={"AWS_ENDPOINT_URL_S3": moto_server.endpoint})
    deployment = client.get_deployment("example", "docker")
    assert deployment.job_variables == {
        "image": "prefecthq/prefect",
        "env": {"AWS_CREDENTIALS": "${AWS_CREDENTIALS}"},
        "labels": ["s3-flow-storage"],
    }
    assert deployment.source["location"]["url"]["url"].startswith(f"s3://{bucket}/example/")

    # When each pool previews what its worker would submit
    env = command_env()
    kube = json.loads(ok(conveyor("pool", "preview", "kubernetes", "example/kubernetes", env=env)))
    docker = json.loads(ok(conveyor("pool", "preview", "docker", "example/docker", env=env)))

    # Then both run the environment's image, pass the secret by name, and the flow's storage
    container = validate_kubernetes_job(kube).spec.template.spec.containers[0]
    assert container.image == "prefecthq/prefect"
    k8s_env = {e.name: e.value for e in container.env}
    assert json.loads(k8s_env["CONVEYOR_SECRET_ENV"]) == {"AWS_CREDENTIALS": "${AWS_CREDENTIALS}"}
    assert (
        json.loads(k8s_env["CONVEYOR_RUN_SOURCE"])
        == client.get_deployment("example", "kubernetes").source
    )
    assert docker["image"] == "prefecthq/prefect"
    assert json.loads(docker["environment"]["CONVEYOR_RUN_SOURCE"]) == deployment.source
    assert docker["labels"]["conveyor.labels"] == "s3-flow-storage"
    # ...and the agent of the document is a kubernetes worker with its label: on this machine,
    # which has no cluster, it refuses to start in one line instead of taking runs it cannot submit
    agent = conveyor("agent", "kubernetes", "start", "-l", "s3-flow-storage", "--burst", env=env)
    assert one_line_error(agent) == "no Kubernetes cluster is configured for this worker"

    # When the docker pool's command runs with exactly that environment, as a process with its
    # own empty cache and no AWS keys of its own
    run = client.create_run("example", "docker")
    pool = {p.name: p for p in client.list_pools()}["docker"]
    request = submission(
        "docker",
        pool.base_job_template,
        run_id=run.id,
        source=deployment.source,
        version=deployment.version,
        entrypoint=deployment.entrypoint,
        flow_name="example",
        deployment_name="docker",
        job_variables=deployment.job_variables,
        api_url=None,
    )
    inside = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONVEYOR_") and k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    inside.update({k: v for k, v in request["environment"].items() if k != "CONVEYOR_API_KEY"})
    inside.update(
        {
            "CONVEYOR_HOME": str(settings.home),
            "CONVEYOR_CACHE_DIR": str(tmp_path / "container-cache"),
            "AWS_ENDPOINT_URL_S3": moto_server.endpoint,
        }
    )
    inside.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [sys.executable, *request["command"][1:]],
        env=inside,
        capture_output=True,
        text=True,
        timeout=180,
    )

    # Then it fetched the flow from S3 with the stored credentials, verified it into its own
    # cache, and ran it with AWS_CREDENTIALS resolved inside; the key went nowhere
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(OUTCOME_PREFIX), done.stdout
    outcome = json.loads(last[len(OUTCOME_PREFIX) :])
    assert outcome["state"] == RunState.COMPLETED.value, outcome
    assert outcome["result"] == {"credentials_seen": "AKIASTORED"}
    (cached,) = (tmp_path / "container-cache").glob(f"*/{deployment.version}")
    assert (cached / "flow.pickle").is_file()
    listed = moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert any(o["Key"].startswith("results/example/credentials-seen-") for o in listed)
    texts = [out, json.dumps(kube), json.dumps(docker), done.stdout, done.stderr]
    assert leaks(settings.home, [SECRET_KEY], *texts) == []


def _register(
    settings: Settings, client: ConveyorClient, tmp_path: Path, run_config: object
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Local

    @task
    def one() -> int:
        return 1

    with Flow("configured", storage=Local(directory=tmp_path / "flows")) as flow:
        one()
    flow.run_config = run_config
    pool = "docker" if type(run_config).__name__ == "DockerRun" else "kubernetes"
    flow.register(project_name=pool, work_pool=pool, settings=settings, client=client)


def test_run_configs_fill_the_pools_base_job_templates(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor.run_configs import DockerRun, KubernetesRun

    client.create_pool("docker", type="docker")
    client.create_pool("kubernetes", type="kubernetes")
    _register(
        settings,
        client,
        tmp_path,
        DockerRun(
            image="reg.example/flows:1",
            env={"MODE": "prod", "TOKEN": "${API_TOKEN}"},
            labels=["gpu"],
            host_config={"mem_limit": "512m", "nano_cpus": 1_500_000_000, "network_mode": "none"},
        ),
    )
    _register(
        settings,
        client,
        tmp_path,
        KubernetesRun(
            image="reg.example/flows:2",
            env={"MODE": "k8s"},
            cpu_request=0.5,
            memory_limit="1Gi",
            service_account_name="flows",
            image_pull_policy="Always",
            image_pull_secrets=["regcred"],
        ),
    )
    env = command_env()
    docker = json.loads(ok(conveyor("pool", "preview", "docker", "configured/docker", env=env)))
    assert docker["image"] == "reg.example/flows:1"
    assert docker["environment"]["MODE"] == "prod"
    assert json.loads(docker["environment"]["CONVEYOR_SECRET_ENV"]) == {"TOKEN": "${API_TOKEN}"}
    assert (docker["mem_limit"], docker["nano_cpus"], docker["network_mode"]) == (
        "512m",
        1_500_000_000,
        "none",
    )
    assert "gpu" in docker["labels"]["conveyor.labels"].split(",")
    manifest = json.loads(
        ok(conveyor("pool", "preview", "kubernetes", "configured/kubernetes", env=env))
    )
    pod = validate_kubernetes_job(manifest).spec.template.spec
    container = pod.containers[0]
    assert container.image == "reg.example/flows:2"
    assert {e.name: e.value for e in container.env}["MODE"] == "k8s"
    assert container.resources.requests == {"cpu": "0.5"}
    assert container.resources.limits == {"memory": "1Gi"}
    assert container.image_pull_policy == "Always"
    assert pod.service_account_name == "flows"
    assert [s.name for s in pod.image_pull_secrets] == ["regcred"]


def test_run_config_settings_no_pool_takes_are_refused() -> None:
    from conveyor.run_configs import DockerRun, KubernetesRun

    with pytest.raises(ConfigError, match=r"ports=.* is not supported"):
        DockerRun(image="x", ports=[8080])
    with pytest.raises(ConfigError, match="host_config privileged is not supported"):
        DockerRun(image="x", host_config={"privileged": True})
    with pytest.raises(ConfigError, match=r"job_template=.* is not supported") as caught:
        KubernetesRun(image="x", job_template={"apiVersion": "batch/v1"})
    assert "base job template" in str(caught.value.hint)
