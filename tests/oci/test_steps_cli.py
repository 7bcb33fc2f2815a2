"""The ``build_docker_image`` / ``push_docker_image`` steps of conveyor.yaml and
``conveyor deploy --image`` / ``--dry-run``, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.connect import connect
from conveyor.settings import Settings
from e2e.conftest import command_env, conveyor, ok
from fixtures.registry import Registry
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
