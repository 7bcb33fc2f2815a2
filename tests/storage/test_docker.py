"""`Docker` storage over the daemonless image builder and a real ``docker-registry``: the storage
document's snippet (registry swapped, the base image named by ``CONVEYOR_DOCKER_BASE_IMAGE``)
builds ``my_flow:<timestamp>``, pushes it, pins the deployment by digest, and a process worker
with an empty cache runs the flow from the image's code layer alone; without ``registry_url``
the image stays on this machine (a warning says so, a server gets a host label); what needs
``RUN`` is a one-line error; script mode through ``files``; the health check."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import socket
import sys
import uuid
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.oci import RegistryClient
from fixtures.registry import Registry, seed_base_image
from oci.conftest import base_of
from storage.conftest import TIMESTAMP, python, run_and_wait, run_logs, run_worker, write_script

pytestmark = pytest.mark.service

SEED_DOCKER = """
from conveyor import Flow
from conveyor.storage import Docker

flow = Flow("gcs-flow", storage=Docker(registry_url="__REGISTRY__", image_name="my_flow"))

flow.storage.build()
"""

AFTER_SEED = """
# --- the test's additions after the snippet: a task, then registration
print("BUILT", flow.storage.name)
from conveyor import task

@task
def shout(text: str) -> str:
    return text.upper()

with flow:
    shout("hello from the image")

deployment = flow.register(labels=["seed"])
print("STORED", flow.storage.name)
"""


def _unique_base(registry: Registry) -> tuple[str, str]:
    """A base image of its own, and its one layer's digest."""
    repo = f"base/unique-{uuid.uuid4().hex[:8]}"
    digest = seed_base_image(registry, repository=repo, note=repo.encode())
    with RegistryClient(registry.url) as api:
        manifest = json.loads(api.get_manifest(repo, digest).data)
    return f"{registry.host}/{repo}:3.11-slim", manifest["layers"][0]["digest"]


def _tags(registry: Registry, repository: str) -> list[str]:
    import httpx

    reply = httpx.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
    return sorted(reply.json().get("tags") or [])


def _config(registry: Registry, repository: str, digest: str) -> dict[str, object]:
    with RegistryClient(registry.url) as api:
        manifest = json.loads(api.get_manifest(repository, digest).data)
        with api.open_blob(repository, manifest["config"]["digest"]) as stream:
            config: dict[str, object] = json.loads(stream.read())["config"]
    return config


def test_seed_snippet_builds_pushes_pins_and_a_cold_worker_runs_the_code_layer_only(
    tmp_path: Path, settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    # Given the document's Docker snippet, verbatim but for the registry, with the base image
    # an organisation's mirror names in the environment
    base, base_layer = _unique_base(registry)
    script = write_script(
        tmp_path / "project" / "docker_flow.py",
        SEED_DOCKER.replace("__REGISTRY__", registry.host) + AFTER_SEED,
    )
    out = python(script, env={"CONVEYOR_DOCKER_BASE_IMAGE": base})
    built = out.split("BUILT ", 1)[1].split()[0]
    stored = out.split("STORED ", 1)[1].split()[0]

    # Then the image is in the registry as my_flow:<slugified UTC timestamp> (twice: the
    # snippet's build, then the grown flow's)
    assert re.fullmatch(rf"{re.escape(registry.host)}/my_flow:{TIMESTAMP}", built), built
    tags = _tags(registry, "my_flow")
    assert stored.rsplit(":", 1)[1] in tags
    assert built.rsplit(":", 1)[1] in tags
    # ...and the deployment is pinned to the pushed digest, the image also what container
    # pools run
    deployment = client.get_deployment("gcs-flow", "default")
    assert deployment.source["kind"] == "oci"
    assert deployment.source["image"] == f"{stored}@{deployment.version}"
    assert deployment.entrypoint == "flows/gcs-flow.pickle"
    assert deployment.job_variables == {"image": deployment.source["image"], "labels": ["seed"]}
    config = _config(registry, "my_flow", deployment.version)
    assert config["Labels"]["org.conveyor.code.dir"] == "/opt/conveyor"  # type: ignore[index]
    assert "PYTHONPATH=/opt/conveyor" in config["Env"]  # type: ignore[operator]

    # When the base image's layer is gone from the registry and a worker with an empty cache
    # runs the flow
    registry.blob_file(base_layer).unlink()
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "gcs-flow", labels=["seed"])

    # Then it ran from the code layer alone: the signed pickle at flows/gcs-flow.pickle
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"shout": "HELLO FROM THE IMAGE"}
    cached = list(settings.cache_dir.glob(f"*/{deployment.version}"))
    assert len(cached) == 1
    assert json.loads((cached[0] / "flows" / "gcs-flow.pickle").read_bytes())["signature"]


def test_without_a_registry_the_image_stays_here_and_a_server_gets_a_host_label(
    settings: Settings,
    client: ConveyorClient,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Docker

    @task
    def one() -> int:
        return 1

    storage = Docker(base_image=base_of(registry), image_name="local_flow", image_tag="v1")
    with Flow("local-image", storage=storage) as flow:
        one()
    # When it is built with no registry_url: a warning says the image is on this machine only
    with caplog.at_level(logging.WARNING, logger="conveyor.storage.docker"):
        flow.storage.build(settings=settings, client=client)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "no registry_url" in warning
    assert "local_flow:v1 was not pushed" in warning
    assert "local_flow" not in _catalog(registry)
    assert storage.labels == []  # no server: everything runs on this machine
    deployment = flow.register(settings=settings, client=client, build=False)
    assert deployment.source["layout"] == str(settings.home / "images")
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "local-image")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)

    # When a Conveyor server is used, the deployment is labelled with this host: a worker of
    # another machine never claims it, one here does
    served = dataclasses.replace(settings, api_url="http://127.0.0.1:9")
    flow.storage.build(settings=served, client=client)
    assert storage.labels == [socket.gethostname()]
    labelled = flow.register(settings=served, client=client, build=False)
    assert labelled.job_variables["labels"] == [socket.gethostname()]
    queued = client.create_run("local-image", "default")
    run_worker(settings, client, labels=["elsewhere"], replace_labels=True)
    assert client.get_run(queued.id).state == RunState.SCHEDULED
    run_worker(settings, client)
    assert client.get_run(queued.id).state == RunState.COMPLETED


def _catalog(registry: Registry) -> list[str]:
    import httpx

    return list(httpx.get(f"{registry.url}/v2/_catalog", timeout=10).json()["repositories"])


def test_what_needs_run_is_a_one_line_error_without_an_engine(
    settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    from conveyor import Flow
    from conveyor.storage import Docker

    cases = [
        ({"python_dependencies": ["pandas==2.2"]}, "python_dependencies=['pandas==2.2']"),
        ({"extra_dockerfile_commands": ["RUN apt-get install -y git"]}, "RUN apt-get"),
    ]
    for extra, named in cases:
        storage = Docker(registry_url=registry.host, base_image=base_of(registry), **extra)  # type: ignore[arg-type]
        flow = Flow(f"needs-{uuid.uuid4().hex[:6]}", storage=storage)
        with pytest.raises(ConfigError) as caught:
            flow.storage.build(settings=settings, client=client)
        message = str(caught.value)
        assert named in message
        assert "needs a Docker engine" in message or "which needs a Docker engine" in message
        assert "daemonless build cannot run commands" in message
        assert "\n" not in message
        assert "base_image" in str(caught.value.hint)
    assert not any(r.startswith("needs-") for r in _catalog(registry))


def test_env_vars_and_config_only_commands_build_daemonlessly(
    settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Docker

    @task
    def mode() -> str:
        import os

        return os.environ["MODE"] + "/" + os.environ["TEAM"]

    storage = Docker(
        registry_url=f"{registry.host}/team",
        base_image=base_of(registry),
        image_name="configured",
        env_vars={"MODE": "nightly run"},
        extra_dockerfile_commands=["ENV TEAM=data", "LABEL owner=data-team"],
    )
    with Flow("configured", storage=storage) as flow:
        mode()
    deployment = flow.register(settings=settings, client=client)
    assert deployment.source["image"].startswith(f"{registry.host}/team/configured:")
    config = _config(registry, "team/configured", deployment.version)
    assert "MODE=nightly run" in config["Env"]  # type: ignore[operator]
    assert "TEAM=data" in config["Env"]  # type: ignore[operator]
    assert config["Labels"]["owner"] == "data-team"  # type: ignore[index]
    got = storage.get_flow("configured", settings=settings, client=client)
    assert got.name == "configured"


def test_script_mode_bakes_the_files_and_runs_the_script(
    tmp_path: Path, settings: Settings, client: ConveyorClient, registry: Registry
) -> None:
    # Given a flow script and a helper module copied into the image with `files`
    helper = write_script(
        tmp_path / "src" / "helpers.py", "def greet(n: str) -> str:\n    return 'hi ' + n\n"
    )
    script_path = tmp_path / "src" / "scripted.py"
    script = write_script(
        script_path,
        f"""
        from conveyor import Flow, task
        from conveyor.storage import Docker
        from helpers import greet

        @task
        def hello() -> str:
            return greet("docker")

        storage = Docker(
            registry_url="{registry.host}",
            base_image="{base_of(registry)}",
            image_name="scripted",
            files={{
                "{script_path}": "/opt/conveyor/flows/scripted.py",
                "{helper}": "/opt/conveyor/flows/helpers.py",
            }},
            path="/opt/conveyor/flows/scripted.py",
            stored_as_script=True,
        )
        with Flow("scripted", storage=storage) as flow:
            hello()

        if __name__ == "__main__":
            deployment = flow.register()
            print("ENTRY", deployment.entrypoint)
        """,
    )
    out = python(script)
    # Then the deployment's entrypoint is the script in the code layer, and it runs there
    assert "ENTRY flows/scripted.py:flow" in out
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "scripted")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"hello": "hi docker"}


def test_the_health_check_warns_about_another_python_in_the_image(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from conveyor import Flow
    from conveyor.storage import Docker

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {base_of(registry)}\nENV PYTHON_VERSION=3.9.18\n")
    warned: dict[bool, list[str]] = {}
    for ignore in (False, True):
        caplog.clear()
        storage = Docker(
            registry_url=registry.host,
            dockerfile=str(dockerfile),
            image_name="old-python",
            ignore_healthchecks=ignore,
        )
        flow = Flow("old-python", storage=storage)
        with caplog.at_level(logging.WARNING, logger="conveyor.storage"):
            flow.storage.build(settings=settings, client=client)
        warned[ignore] = [
            r.getMessage() for r in caplog.records if "PYTHON_VERSION" in r.getMessage()
        ]
    (message,) = warned[False]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"has Python 3.9.18 (PYTHON_VERSION) but its flows were pickled with Python {here}" in (
        message
    )
    assert warned[True] == []


def test_constructor_validation(tmp_path: Path) -> None:
    from conveyor import Flow
    from conveyor.storage import Docker

    with pytest.raises(ConfigError, match="Only one of `base_image` and `dockerfile`"):
        Docker(base_image="python:3.11", dockerfile="Dockerfile")
    with pytest.raises(ConfigError, match=r"Provided paths \['rel/x.py'\] are not absolute"):
        Docker(files={"rel/x.py": "/opt/conveyor/x.py"})
    with pytest.raises(ConfigError, match="is outside prefect_directory '/opt/conveyor'"):
        Docker(files={str(tmp_path): "/root/.prefect/flows"})
    with pytest.raises(ConfigError, match="tls_config is not supported"):
        Docker(tls_config={"verify": True})
    with pytest.raises(ConfigError, match="A `path` must be provided"):
        Flow("s", storage=Docker(stored_as_script=True))
    storage = Docker(prefect_directory="/opt/prefect", registry_url="reg.example/", image_name="x")
    flow = Flow("My Flow!", storage=storage)
    assert storage.flows == {"My Flow!": "/opt/prefect/flows/my-flow.pickle"}
    assert storage.name == "Docker"  # no tag until it is built
    storage.image_tag = "t1"
    assert storage.name == "reg.example/x:t1"
    assert "My Flow!" in storage
    with pytest.raises(ConfigError, match="has not been built"):
        storage.get_flow(flow.name)


@pytest.mark.parametrize(
    ("registry_url", "hint"),
    [
        ("http://127.0.0.1:5000/org", "write 127.0.0.1:5000/org/etl_flow"),
        (
            "https://ci:pw-5e1f9a@127.0.0.1:5000/org",
            "write 127.0.0.1:5000/org/etl_flow, and save the registry's login as credentials",
        ),
    ],
)
def test_a_registry_url_with_a_scheme_is_refused_naming_the_fix_and_no_password(
    registry_url: str, hint: str, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor import Flow
    from conveyor.storage import Docker

    # Given a registry written as a URL (as a browser shows it), perhaps with a login in it
    flow = Flow("etl", storage=Docker(registry_url=registry_url, image_name="etl_flow"))

    # When it is built, Then a one-line error says what to write, and never shows the password
    with pytest.raises(ConfigError, match="an image reference has no scheme") as caught:
        flow.storage.build(settings=settings, client=client)
    shown = f"{caught.value} {caught.value.hint}"
    assert "\n" not in shown
    assert hint in shown
    assert "pw-5e1f9a" not in shown


def test_registry_credentials_come_from_the_docker_login_file(
    settings: Settings,
    client: ConveyorClient,
    basic_registry: Registry,
    registry: Registry,
    isolate: Path,
) -> None:
    import base64

    from conveyor import Flow, task
    from conveyor.errors import AuthenticationError
    from conveyor.storage import Docker
    from fixtures.registry import PASSWORD, USER

    @task
    def one() -> int:
        return 1

    def storage() -> Docker:
        return Docker(
            registry_url=basic_registry.host, base_image=base_of(registry), image_name="private"
        )

    # Given a registry that wants a login, and no login anywhere: a one-line refusal
    with Flow("private", storage=storage()) as flow:
        one()
    with pytest.raises(AuthenticationError) as caught:
        flow.storage.build(settings=settings, client=client)
    assert "\n" not in str(caught.value)
    # When `docker login` has written its file (as the first generation expected), the push
    # and the worker's pull both use it, and the password is stored nowhere by Conveyor
    config = isolate / ".docker" / "config.json"
    config.parent.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{basic_registry.host}": {"auth": auth}}}))
    flow.storage = storage()
    deployment = flow.register(settings=settings, client=client)
    assert deployment.source["image"].startswith(f"{basic_registry.host}/private:")
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "private")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert [
        p for p in settings.home.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()
    ] == []
