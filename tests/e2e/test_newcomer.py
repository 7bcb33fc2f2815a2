"""What a newcomer pastes from the README works (issue 7, item 18): ``conveyor deploy`` with only
a ``conveyor.yaml``, a ``file://`` git repository as ``--source``, the git options on the command
line, an entrypoint written from the working directory into ``--source``'s folder, and the
server's health probe without the API key."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest

from e2e.conftest import Server, api, command_env, conveyor, ok, one_line_error, server_env
from worker.flows_project import write_project

pytestmark = pytest.mark.slow

PROJECT = """
deployments:
  - name: first
    entrypoint: flows.py:hello
    parameters: {name: One}
  - name: second
    entrypoint: flows.py:hello
    parameters: {name: Two}
"""


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_conveyor_yaml_alone_deploys_every_deployment_or_one_by_name(tmp_path: Path) -> None:
    env = command_env()
    project = write_project(tmp_path / "project")
    (project / "conveyor.yaml").write_text(PROJECT)

    out = ok(conveyor("deploy", env=env, cwd=project))
    assert "deployment hello/first version sha256-" in out
    assert "deployment hello/second version sha256-" in out
    with api(env) as client:
        assert {d.name for d in client.list_deployments()} == {"first", "second"}
        assert client.get_deployment("hello", "second").parameters == {"name": "Two"}

    (project / "helpers.py").write_text("def shout(text):\n    return text + '?'\n")
    out = ok(conveyor("deploy", "--name", "second", env=env, cwd=project))
    assert "hello/second" in out
    assert "hello/first" not in out
    assert "no deployment named 'third'" in one_line_error(
        conveyor("deploy", "--name", "third", env=env, cwd=project)
    )
    assert "--name is required" in one_line_error(
        conveyor("deploy", "flows.py:hello", env=env, cwd=project)
    )


def test_a_file_url_of_a_repository_is_a_git_source_with_the_git_options(tmp_path: Path) -> None:
    # Given a local git repository with two commits and a flow in a subdirectory
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    write_project(repo / "flows")
    (repo / "other").mkdir()
    (repo / "other" / "big.txt").write_text("not needed\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-qm", "one", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "flows" / "helpers.py").write_text("def shout(text):\n    return 'second'\n")
    _git("commit", "-qam", "two", cwd=repo)
    env = command_env()

    # When it is deployed by file:// URL, pinned to the first commit, with only flows/ checked out
    out = ok(
        conveyor(
            "deploy",
            "flows/flows.py:hello",
            "--name",
            "from-file",
            "--source",
            repo.as_uri(),
            "--commit-sha",
            first,
            "--directories",
            "flows",
            env=env,
            cwd=tmp_path,
        )
    )

    # Then it is a git deployment of that commit and that directory
    assert f"version {first}" in out
    with api(env) as client:
        deployment = client.get_deployment("hello", "from-file")
    assert deployment.source["kind"] == "git"
    assert deployment.source["commit_sha"] == first
    assert deployment.source["directories"] == ["flows"]
    assert deployment.version == first


def test_the_health_probe_answers_without_the_api_key(tmp_path: Path) -> None:
    server = Server.start(
        server_env(tmp_path / "server", CONVEYOR_API_KEY="probe-key-1"), log=tmp_path / "s.log"
    )
    try:
        with urllib.request.urlopen(f"{server.url}/api/health", timeout=10) as answer:
            assert answer.status == 200
        request = urllib.request.Request(f"{server.url}/api/runs")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        bundle = urllib.request.Request(
            f"{server.url}/api/bundles/sha256-{'0' * 64}", method="HEAD"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bundle, timeout=10)
        assert refused.value.code == 401  # the bundle store is behind the key too
    finally:
        server.stop()


def test_an_entrypoint_written_from_here_into_the_source_folder_deploys(tmp_path: Path) -> None:
    # Given a project folder below the working directory, as examples/hello is in this repository
    env = command_env()
    write_project(tmp_path / "examples" / "hello")

    # When its flow is named by the path from here (as `prefect deploy` takes it), ./ or not
    out = ok(
        conveyor(
            "deploy", "examples/hello/flows.py:hello", "--name", "here", "--source",
            "examples/hello", env=env, cwd=tmp_path,
        )
    )  # fmt: skip
    dotted = ok(
        conveyor(
            "deploy", "./examples/hello/flows.py:hello", "--name", "dotted", "--source",
            "examples/hello", env=env, cwd=tmp_path,
        )
    )  # fmt: skip
    missing = conveyor(
        "deploy", "examples/hello/nope.py:hello", "--name", "x", "--source", "examples/hello",
        env=env, cwd=tmp_path,
    )  # fmt: skip

    # Then both deploy the folder with the entrypoint inside it; a file that is not there is
    # still named, relative to the folder
    assert "deployment hello/here version sha256-" in out
    assert "deployment hello/dotted version sha256-" in dotted
    with api(env) as client:
        entrypoints = {d.name: d.entrypoint for d in client.list_deployments()}
    assert entrypoints == {"here": "flows.py:hello", "dotted": "flows.py:hello"}
    assert "examples/hello/nope.py does not exist" in one_line_error(missing)
