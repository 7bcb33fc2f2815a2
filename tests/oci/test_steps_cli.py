"""The ``build_docker_image`` / ``push_docker_image`` steps of conveyor.yaml and
``conveyor deploy --image`` / ``--dry-run``, through the real command line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from conveyor.connect import connect
from conveyor.settings import Settings
from conveyor.sources.oci import RegistryClient
from e2e.conftest import command_env, conveyor, ok, one_line_error
from fixtures.registry import Registry, seed_base_image
from oci.conftest import base_of
from worker.flows_project import write_project


def test_dry_run_prints_the_generated_dockerfile_and_stores_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    project = write_project(tmp_path / "project")
    env = command_env()
    args = [
        "deploy",
        "flows.py:hello",
        "-n",
        "img",
        "--image",
        "127.0.0.1:5999/flows/hello:v1",
        "--dry-run",
    ]
    first = ok(conveyor(*args, env=env, cwd=project))
    assert ok(conveyor(*args, env=env, cwd=project)) == first  # deterministic
    lines = first.splitlines()
    assert "# image 127.0.0.1:5999/flows/hello:v1" in lines
    assert "FROM python:3.11-slim" in lines or any(
        line.startswith("FROM python:3.") for line in lines
    )
    assert "COPY . /opt/conveyor/code/" in lines
    assert any(line.startswith('LABEL org.conveyor.code.version="sha256-') for line in lines)
    with connect(settings) as api:
        assert api.list_deployments() == []


def test_base_image_option_is_the_generated_dockerfiles_from(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    env = command_env()
    args = ["deploy", "flows.py:hello", "-n", "img", "--image", "127.0.0.1:5999/flows/hello:v1"]

    planned = ok(
        conveyor(*args, "--base-image", "127.0.0.1:5999/base/python:3.12-slim", "--dry-run",
                 env=env, cwd=project)
    )  # fmt: skip
    alone = conveyor("deploy", "flows.py:hello", "-n", "img", "--base-image", "python:3.12",
                     env=env, cwd=project)  # fmt: skip
    bad = conveyor(*args, "--base-image", "Not An Image!", "--dry-run", env=env, cwd=project)

    assert "FROM 127.0.0.1:5999/base/python:3.12-slim" in planned.splitlines()
    assert one_line_error(alone) == "--base-image is the base of an image build, and there is none"
    assert "hint: add --image REGISTRY/NAME:TAG" in alone.stderr
    assert "Not An Image!" in one_line_error(bad)


def test_deploy_image_bakes_on_the_base_image_option(
    tmp_path: Path, settings: Settings, registry: Registry
) -> None:
    # Given a base image of its own in a registry on loopback (no container engine here)
    repo = f"base/cli-{uuid.uuid4().hex[:8]}"
    seed_base_image(registry, repository=repo, note=repo.encode())
    with RegistryClient(registry.url) as api:
        base = json.loads(api.get_manifest(repo, "3.11-slim").data)
    project = write_project(tmp_path / "project")
    # When the command line deploys with --image and --base-image
    image = f"{registry.host}/flows/cli-base"
    ok(
        conveyor("deploy", "flows.py:hello", "-n", "based", "--image", f"{image}:v1",
                 "--base-image", f"{registry.host}/{repo}:3.11-slim",
                 env=command_env(), cwd=project, timeout=120)
    )  # fmt: skip
    # Then the pinned image is built on that base: its first layer is the base's layer
    with connect(settings) as client:
        deployment = client.get_deployment("hello", "based")
    assert deployment.source["image"] == f"{image}:v1@{deployment.version}"
    with RegistryClient(registry.url) as api:
        built = json.loads(api.get_manifest("flows/cli-base", deployment.version).data)
    assert built["layers"][0]["digest"] == base["layers"][0]["digest"]
    assert len(built["layers"]) == len(base["layers"]) + 1  # the code layer on top


def test_project_build_and_push_steps_bake_and_pin_the_deployment(
    tmp_path: Path, settings: Settings, registry: Registry
) -> None:
    # Given a conveyor.yaml with Prefect-style build and push steps and a templated image
    project = write_project(tmp_path / "project")
    (project / "conveyor.yaml").write_text(
        f"""
build:
  - prefect_docker.deployments.steps.build_docker_image:
      id: build-image
      image_name: {registry.host}/flows/from-yaml
      tag: v7
      dockerfile: auto
      base_image: {base_of(registry)}
push:
  - push_docker_image:
      id: push-image
      image_name: "{{{{ build-image.image_name }}}}"
      tag: "{{{{ build-image.tag }}}}"
deployments:
  - name: yaml
    entrypoint: flows.py:hello
    work_pool:
      name: default
      job_variables:
        image: "{{{{ push-image.image }}}}"
"""
    )
    # When it is deployed with the command line
    out = ok(conveyor("deploy", env=command_env(), cwd=project, timeout=120))
    # Then the deployment's code is the pushed image, pinned, and so is the job variable
    with connect(settings) as api:
        deployment = api.get_deployment("hello", "yaml")
    assert deployment.source["kind"] == "oci"
    assert deployment.version.startswith("sha256:")
    pinned = f"{registry.host}/flows/from-yaml:v7@{deployment.version}"
    assert deployment.source["image"] == pinned
    assert deployment.job_variables["image"] == pinned
    assert deployment.version in out
    assert json.loads(json.dumps(deployment.source)) == deployment.source
