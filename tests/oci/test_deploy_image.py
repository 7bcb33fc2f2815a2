"""Deploying with ``image=``: the code baked daemonlessly, pushed to a real registry, the
deployment pinned by digest, and a process worker with an empty cache running the flow from the
image's code layer alone."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.docker import DockerImage
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.oci import ImageSource, RegistryClient
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from fixtures.registry import Registry, seed_base_image
from oci.conftest import base_of
from worker.flows_project import write_project


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


def run_worker(settings: Settings, client: ConveyorClient, cache: Path) -> None:
    """A burst worker with its own, empty code cache."""
    own = dataclasses.replace(settings, cache_dir=cache)
    options = WorkerOptions(pool="default", name="w-img", lease_seconds=3.0, poll_seconds=0.2)
    assert Worker.from_settings(own, client, options).work(burst=True) == 0


def _unique_base(registry: Registry) -> tuple[str, str]:
    """A base image of its own (its layer is this test's), and that layer's digest."""
    repo = f"base/unique-{uuid.uuid4().hex[:8]}"
    digest = seed_base_image(registry, repository=repo, note=repo.encode())
    with RegistryClient(registry.url) as api:
        manifest = json.loads(api.get_manifest(repo, digest).data)
    return f"{registry.host}/{repo}:3.11-slim", manifest["layers"][0]["digest"]


def test_deploy_bakes_pushes_and_pins_and_a_cold_worker_runs_only_the_code_layer(
    settings: Settings, client: ConveyorClient, project: Path, registry: Registry, tmp_path: Path
) -> None:
    # Given a flow deployed with image=..., build and push (daemonless: no engine here)
    base, base_layer = _unique_base(registry)
    image = DockerImage(f"{registry.host}/flows/hello", tag="v1", base_image=base)
    deployment = from_source(project, "flows.py:hello").deploy(
        "img", settings=settings, client=client, image=image, build=True, push=True
    )
    # Then the deployment points at the registry image, pinned by digest
    assert deployment.source["kind"] == "oci"
    assert deployment.version.startswith("sha256:")
    assert deployment.source["image"] == f"{registry.host}/flows/hello:v1@{deployment.version}"
    assert deployment.job_variables["image"] == deployment.source["image"]
    assert "layout" not in deployment.source
    # When the base image's layer disappears from the registry (the worker must not need it)
    registry.blob_file(base_layer).unlink()
    run = client.create_run("hello", "img", parameters={"name": "Ada"})
    run_worker(settings, client, tmp_path / "worker-cache")
    # Then a worker with an empty cache ran the flow from the image's code layer
    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result == "HELLO ADA"
    assert done.version == deployment.version
    cached = list((tmp_path / "worker-cache").glob(f"*/{deployment.version}"))
    assert len(cached) == 1
    assert (cached[0] / "flows.py").read_text() == (project / "flows.py").read_text()


def test_a_deployment_keeps_its_digest_when_the_tag_moves_unless_it_follows_the_ref(
    settings: Settings, client: ConveyorClient, project: Path, registry: Registry, tmp_path: Path
) -> None:
    # Given an image pushed as :latest and two deployments of it: pinned, and following the tag
    image = DockerImage(f"{registry.host}/flows/moving", tag="latest", base_image=base_of(registry))
    from_source(project, "flows.py:hello").deploy(
        "pinned", settings=settings, client=client, image=image
    )
    tagged = ImageSource(f"{registry.host}/flows/moving:latest")
    following = from_source(tagged, "flows.py:hello").deploy(
        "following", settings=settings, client=client, follow_ref=True
    )
    first = following.version
    # When new code is pushed under the same tag
    (project / "helpers.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    from_source(project, "flows.py:hello").deploy(
        "other", settings=settings, client=client, image=image
    )
    moved = tagged.resolve()
    assert moved != first
    pinned_run = client.create_run("hello", "pinned", parameters={"name": "Bo"})
    follow_run = client.create_run("hello", "following", parameters={"name": "Bo"})
    run_worker(settings, client, tmp_path / "cache")
    # Then the pinned deployment ran its digest; the following one re-resolved and says so
    pinned = client.get_run(pinned_run.id)
    assert (pinned.version, pinned.result) == (first, "HELLO BO")
    followed = client.get_run(follow_run.id)
    assert (followed.version, followed.result) == (moved, "HELLO BO!")
    logs = [line.message for line in client.read_logs(follow_run.id)]
    assert any(f"is at {moved}" in line for line in logs)


def test_push_false_keeps_the_image_in_the_local_layout(
    settings: Settings, client: ConveyorClient, project: Path, registry: Registry, tmp_path: Path
) -> None:
    image = DockerImage(
        f"{registry.host}/flows/local-only", tag="dev", base_image=base_of(registry)
    )
    deployment = from_source(project, "flows.py:hello").deploy(
        "local", settings=settings, client=client, image=image, push=False
    )
    assert deployment.source["layout"] == str(settings.home / "images")
    assert (settings.home / "images" / "index.json").is_file()
    with RegistryClient(registry.url) as api:
        assert api.manifest_digest("flows/local-only", "dev") is None  # nothing pushed
    run = client.create_run("hello", "local", parameters={})
    run_worker(settings, client, tmp_path / "cache")
    assert client.get_run(run.id).result == "HELLO WORLD"


def test_build_false_uses_the_image_only_as_the_runtime(
    settings: Settings, client: ConveyorClient, project: Path
) -> None:
    deployment = from_source(project, "flows.py:hello").deploy(
        "runtime", settings=settings, client=client, image="ghcr.io/org/runtime:3", build=False
    )
    assert deployment.source["kind"] == "store"
    assert deployment.job_variables["image"] == "ghcr.io/org/runtime:3"


def test_follow_ref_with_an_image_build_is_refused(
    settings: Settings, client: ConveyorClient, project: Path
) -> None:
    with pytest.raises(ConfigError, match="image pins one version"):
        from_source(project, "flows.py:hello").deploy(
            "x", settings=settings, client=client, image="reg.example/a:b", follow_ref=True
        )
