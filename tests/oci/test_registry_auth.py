"""Registry logins: htpasswd basic auth and the bearer-token flow against real servers, saved
`DockerRegistryCredentials` and Docker's config file (read, never written), and the password
never reaching logs, argv, the database or any file."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import DockerRegistryCredentials
from conveyor.client import ConveyorClient
from conveyor.connect import connect, fetch_context
from conveyor.deploy import from_source
from conveyor.docker import DockerImage, ImageContext
from conveyor.errors import AuthenticationError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.oci import ImageSource
from e2e.conftest import command_env
from fixtures.registry import PASSWORD, TOKEN_PASSWORD, TOKEN_USER, USER, Registry
from oci.conftest import base_of
from oci.test_deploy_image import run_worker
from sources.contract import snapshot, write_known_tree
from worker.flows_project import write_project


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def test_basic_auth_with_saved_credentials_end_to_end_and_the_password_goes_nowhere(
    settings: Settings,
    client: ConveyorClient,
    basic_registry: Registry,
    tmp_path: Path,
    isolate: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Given credentials saved with the command line (the password on stdin only)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "credentials",
            "create",
            "docker",
            "reg",
            "--username",
            USER,
            "--registry",
            basic_registry.host,
        ],
        input=PASSWORD,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    # When a flow is deployed into that registry and run by a cold worker (recording the argv
    # and environment of every process started meanwhile)
    started: list[str] = []
    real_popen = subprocess.Popen

    def recording(args, *rest, **kwargs):  # type: ignore[no-untyped-def]
        started.append(json.dumps([list(map(str, args)), dict(kwargs.get("env") or {})]))
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    project = write_project(tmp_path / "project")
    image = DockerImage(
        f"{basic_registry.host}/flows/private",
        tag="v1",
        base_image=base_of(basic_registry),
        credentials="reg",
    )
    deployment = from_source(project, "flows.py:hello").deploy(
        "private", settings=settings, client=client, image=image
    )
    assert deployment.source["credentials"] == "reg"
    run = client.create_run("hello", "private", parameters={"name": "Cy"})
    run_worker(settings, client, tmp_path / "worker-cache")
    monkeypatch.setattr(subprocess, "Popen", real_popen)
    # Then it ran, pulling with the saved login
    finished = client.get_run(run.id)
    assert finished.state is RunState.COMPLETED, finished.error
    assert started  # the flow's child process at least
    assert all(PASSWORD not in text for text in started)  # no argv, no child environment
    # And the password is in no log, no file (database, cache, image layout, workspaces)
    secret = PASSWORD.encode()
    assert _files_containing(isolate, secret) == []
    assert _files_containing(tmp_path, secret) == []
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in line.message for line in client.read_logs(run.id))
    assert PASSWORD not in json.dumps(deployment.model_dump(mode="json"))
    # And what the command line lists is the name only
    listed = subprocess.run(
        [sys.executable, "-m", "conveyor", "credentials", "ls"],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.stdout.split() == ["reg"]


def test_basic_auth_without_or_with_a_wrong_login_is_refused(
    basic_registry: Registry, settings: Settings, client: ConveyorClient
) -> None:
    image = f"{basic_registry.host}/base/python:3.11-slim"
    with pytest.raises(AuthenticationError, match="requires a login") as anonymous:
        ImageSource(image).resolve()
    assert "credentials create docker" in (anonymous.value.hint or "")
    DockerRegistryCredentials(USER, "wrong-password", basic_registry.host).save("bad", store=client)
    with pytest.raises(AuthenticationError, match="rejected the login") as wrong:
        ImageSource(image, credentials="bad").resolve(fetch_context(settings, client))
    assert "wrong-password" not in str(wrong.value)


def test_credentials_for_another_registry_are_never_sent(
    basic_registry: Registry, settings: Settings, client: ConveyorClient
) -> None:
    DockerRegistryCredentials(USER, PASSWORD, "ghcr.io").save("elsewhere", store=client)
    with pytest.raises(Exception, match=r"are for ghcr\.io"):
        ImageSource(
            f"{basic_registry.host}/base/python:3.11-slim", credentials="elsewhere"
        ).resolve(fetch_context(settings, client))


def test_docker_config_is_read_as_a_fallback_and_never_written(
    basic_registry: Registry, isolate: Path
) -> None:
    config = isolate / ".docker" / "config.json"
    config.parent.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{basic_registry.host}": {"auth": auth}}}))
    before = (config.read_bytes(), config.stat().st_mtime_ns)

    digest = ImageSource(f"{basic_registry.host}/base/python:3.11-slim").resolve(
        __import__("conveyor.sources.base", fromlist=["FetchContext"]).FetchContext(
            environ={"HOME": str(isolate)}
        )
    )

    assert digest.startswith("sha256:")
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json"]


def test_bearer_token_flow_push_and_pull_with_a_base_from_another_registry(
    token_registry: Registry,
    registry: Registry,
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    # Given token-server credentials and a base image on another registry (copied, not mounted)
    DockerRegistryCredentials(TOKEN_USER, TOKEN_PASSWORD, token_registry.host).save(
        "tok", store=client
    )
    tree = write_known_tree(tmp_path / "tree")
    image = DockerImage(
        f"{token_registry.host}/team/flows",
        tag="v1",
        base_image=base_of(registry),
        credentials="tok",
    )
    ctx = ImageContext(
        layout_dir=tmp_path / "images", secrets=client, environ={"HOME": str(tmp_path)}
    )
    # When it is built and pushed, then pulled back with the same saved name
    pushed = image.push(image.build(tree, ctx), ctx)
    assert pushed.blobs_uploaded == 3  # the base layer copied over, the code layer, the config
    source = ImageSource(pushed.image, credentials="tok")
    dest = tmp_path / "dest"
    dest.mkdir()
    source.fetch(
        source.resolve(fetch_context(settings, client)), dest, fetch_context(settings, client)
    )
    # Then the tree came back, and every token was asked for by our user for the scopes needed
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)
    requests = token_registry.token_requests()
    assert requests
    assert all(line.startswith(f"{TOKEN_USER} repository:team/flows:") for line in requests)
    # (the registry names the actions in its challenge in either order: Go map iteration)
    asked = [set(line.split()[1].rpartition(":")[2].split(",")) for line in requests]
    assert {"pull", "push"} in asked
    # And anonymous pulls are refused by the token flow
    with pytest.raises(AuthenticationError):
        ImageSource(pushed.image).resolve()


def test_the_dashboard_form_makes_loadable_registry_credentials() -> None:
    from conveyor.credentials import Credentials
    from conveyor.server.dashboard.secret_kinds import build_value

    name, value = build_value(
        "docker",
        "ghcr",
        {"docker.username": "ci", "docker.password": "pw", "docker.registry_url": "ghcr.io"},
    )
    loaded = Credentials.from_data(json.loads(value), name="ghcr")
    assert name == "credentials.ghcr"
    assert isinstance(loaded, DockerRegistryCredentials)
    assert loaded.host == "ghcr.io"
    assert str(loaded.password) == "****"
