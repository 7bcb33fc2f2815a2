"""The project files on the command line: ``deploy --name`` reads and checks only the named
deployment of prefect.yaml or conveyor.yaml (the shared sections still are); ``init`` without a
flow says what to do instead of ``next: conveyor deploy``; ``deploy --dry-run`` names the source
a deploy would use."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import command_env, conveyor, ok, one_line_error
from fixtures.git_server import Repos, git_repos_root, repos  # noqa: F401 - fixtures
from worker.flows_project import FLOWS, HELPERS, write_project

pytestmark = pytest.mark.slow

PREFECT_YAML = """
name: pf
deployments:
  - name: pfdemo
    entrypoint: flows.py:hello
    schedules: []
  - name: pfsched
    entrypoint: flows.py:hello
    schedules:
      - cron: "0 * * * *"
"""

CONVEYOR_YAML = """
deployments:
  - name: good
    entrypoint: flows.py:hello
  - name: bad
    entrypoint: flows.py:hello
    no_such_key: 1
"""


@pytest.mark.parametrize("name", ["pfdemo", "hello/pfdemo"])
def test_deploying_one_prefect_deployment_checks_only_that_one(name: str, tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    (project / "prefect.yaml").write_text(PREFECT_YAML)
    env = command_env()

    out = ok(conveyor("deploy", "--name", name, env=env, cwd=project))

    assert "deployment hello/pfdemo version" in out
    for refused in (("--name", "pfsched"), ()):
        error = one_line_error(conveyor("deploy", *refused, env=env, cwd=project))
        assert (
            error
            == "prefect.yaml: deployments[1] (pfsched): schedules is not supported by Conveyor"
        )


def test_deploying_one_conveyor_yaml_deployment_checks_only_that_one(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    (project / "conveyor.yaml").write_text(CONVEYOR_YAML)
    env = command_env()

    assert "deployment hello/good version" in ok(
        conveyor("deploy", "--name", "good", env=env, cwd=project)
    )
    for refused in (("--name", "bad"), ()):
        assert "deployments.1.no_such_key" in one_line_error(
            conveyor("deploy", *refused, env=env, cwd=project)
        )
    (project / "conveyor.yaml").write_text("pull: 3\n" + CONVEYOR_YAML)
    assert "pull" in one_line_error(conveyor("deploy", "--name", "good", env=env, cwd=project))


def test_init_without_a_flow_says_to_write_one_before_deploying(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()

    out = ok(conveyor("init", env=command_env(), cwd=folder))

    assert "next: conveyor deploy" not in out
    lines = out.splitlines()
    assert lines[1] == (
        "no @flow function found in the project folder: entrypoint flows.py:main is a placeholder"
    )
    assert lines[2].startswith("next: write a @flow function")
    assert lines[2].endswith("then conveyor deploy")
    assert len(lines) == 3


def test_init_with_a_flow_says_next_deploy(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")

    out = ok(conveyor("init", env=command_env(), cwd=project))

    assert out.splitlines()[-1] == "next: conveyor deploy"
    assert "entrypoint: flows.py:hello" in (project / "conveyor.yaml").read_text()


def test_a_dry_run_names_the_source_a_deploy_would_use_and_stores_nothing(
    tmp_path: Path,
    repos: Repos,  # noqa: F811
) -> None:
    # Given a git repository holding the flow, and a folder whose conveyor.yaml clones it
    repo = repos.make("dry-run")
    head = repo.commit({"flows.py": FLOWS.lstrip(), "helpers.py": HELPERS.lstrip()})
    project = tmp_path / "project"
    project.mkdir()
    (project / "conveyor.yaml").write_text(
        f"pull:\n  - git_clone: {{repository: {repo.file_url}, branch: main}}\n"
        "deployments:\n  - {name: nightly, entrypoint: flows.py:hello}\n"
    )
    env = command_env()

    folder = write_project(tmp_path / "folder")  # and a plain folder holding it

    # When a deploy from the URL, one from the project file and one of the folder are dry runs
    by_url = ok(
        conveyor(
            "deploy", "flows.py:hello", "-n", "x", "--source", repo.file_url, "--branch", "main",
            "--dry-run", env=env, cwd=tmp_path,
        )
    )  # fmt: skip
    by_file = ok(conveyor("deploy", "--dry-run", env=env, cwd=project))
    by_folder = ok(
        conveyor("deploy", "flows.py:hello", "-n", "x", "--dry-run", env=env, cwd=folder)
    )

    # Then each names the git repository and says the deployment pins it (not a folder called
    # "file:" and a bundle), the folder's says bundle, and nothing was stored
    for out in (by_url, by_file):
        assert repo.file_url in out.splitlines()[0]
        assert "/file:" not in out
        assert out.splitlines()[1] == (
            "# no image build: the deployment pins the version its ref resolves to"
        )
    assert str(folder) in by_folder.splitlines()[0]
    assert by_folder.splitlines()[1] == "# no image build: the code is stored as a bundle"
    assert ok(conveyor("deployments", "ls", "--json", env=env)).strip() == "[]"
    assert f"version {head}" in ok(conveyor("deploy", env=env, cwd=project))


@pytest.mark.parametrize("file", ["prefect.yaml", "conveyor.yaml"])
def test_a_work_queue_is_named_as_ignored_not_dropped_silently(file: str, tmp_path: Path) -> None:
    # Given a deployment that asks for Prefect's work queue "high" of pool default
    project = write_project(tmp_path / "project")
    (project / file).write_text(
        "deployments:\n  - name: urgent\n    entrypoint: flows.py:hello\n"
        "    work_pool: {name: default, work_queue_name: high}\n"
        "  - name: plain\n    entrypoint: flows.py:hello\n"
        "    work_pool: {name: default, work_queue_name: default}\n"
    )

    # When it is deployed
    result = conveyor("deploy", env=command_env(), cwd=project)

    # Then it deploys to the pool, with one note saying the queue is not kept (none for the
    # default queue, which is what Conveyor does anyway)
    assert "deployment hello/urgent version" in ok(result)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: {file}: deployment urgent: work_queue_name 'high' is ignored (Conveyor has no "
        "work queues): its runs go to work pool 'default'; give them a pool of their own to keep "
        "them apart"
    ]


def test_a_conveyor_yaml_beside_a_prefect_yaml_is_said_to_be_the_one_read(tmp_path: Path) -> None:
    # Given a Prefect project (its prefect.yaml) where `conveyor init` writes a conveyor.yaml
    project = write_project(tmp_path / "project")
    (project / "prefect.yaml").write_text(
        "deployments:\n  - {name: pfdemo, entrypoint: flows.py:hello}\n"
        "  - {name: pfother, entrypoint: flows.py:hello}\n"
    )
    env = command_env()
    init = conveyor("init", env=env, cwd=project)

    # When it is deployed, and prefect.yaml's deployment is asked for by a name it lacks
    deploy = conveyor("deploy", env=env, cwd=project)
    wrong = conveyor("deploy", "--prefect-yaml", "prefect.yaml", "-n", "nope", env=env, cwd=project)

    # Then init and deploy each say which file is read, and the error names prefect.yaml
    assert ok(init).startswith("wrote conveyor.yaml")
    assert "note: conveyor deploy now reads conveyor.yaml here, not prefect.yaml" in init.stderr
    assert "deployment hello/default version" in ok(deploy)
    assert "note: reading conveyor.yaml; prefect.yaml beside it is not read" in deploy.stderr
    assert one_line_error(wrong) == "prefect.yaml has no deployment named 'nope'"
    assert "hint: it has: pfdemo, pfother" in wrong.stderr


PREFECT_ENV_TEMPLATES = """
name: pf
deployments:
  - name: pfenv
    version: "{{ $GIT_SHA }}"
    entrypoint: flows.py:hello
    tags: ["{{ $STAGE }}", static]
    description: "deployed to {{ $STAGE }}"
    parameters: {name: "{{ $STAGE }}-team"}
"""


def test_env_templates_in_a_prefect_deployments_fields_are_filled_in_at_deploy(
    tmp_path: Path,
) -> None:
    # Given a prefect.yaml whose deployment fields name the deploying shell's variables, as
    # `prefect deploy` fills them in (nothing resolves a parameter or a tag later)
    from e2e.conftest import api, wait_for_run

    project = write_project(tmp_path / "project")
    (project / "prefect.yaml").write_text(PREFECT_ENV_TEMPLATES)

    # When it is deployed without one of them, then with them, and run
    missing = conveyor("deploy", env=command_env(GIT_SHA="abc1234"), cwd=project)
    env = command_env(GIT_SHA="abc1234", STAGE="prod")
    done = conveyor("deploy", env=env, cwd=project)
    ok(done)
    ok(conveyor("run", "hello/pfenv", env=env))
    ok(conveyor("worker", "start", "--burst", env=env, timeout=120))

    # Then a missing variable is named in one line, and the deployment and its run have the
    # values (the version label is said not to be kept, not dropped silently)
    assert one_line_error(missing) == (
        "deployment 'pfenv': parameters.name: template {{ $STAGE }} has no value in this "
        "environment"
    )
    assert (
        "note: prefect.yaml: deployments[0] (pfenv): version '{{ $GIT_SHA }}' is not kept"
        in done.stderr
    )
    with api(env) as client:
        deployment = client.get_deployment("hello", "pfenv")
        assert deployment.tags == ["prod", "static"]
        assert deployment.description == "deployed to prod"
        assert deployment.parameters == {"name": "prod-team"}
        (run,) = client.list_runs()
        assert wait_for_run(client, run.id).result == "HELLO PROD-TEAM"


def test_a_secret_template_in_a_deployments_parameters_is_refused(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    (project / "prefect.yaml").write_text(
        PREFECT_ENV_TEMPLATES.replace(
            '"{{ $STAGE }}-team"', '"{{ prefect.blocks.secret.api-key }}"'
        )
    )
    env = command_env(STAGE="prod")

    error = one_line_error(conveyor("deploy", env=env, cwd=project))

    assert error == (
        "deployment 'pfenv': parameters.name: {{ prefect.blocks.secret.api-key }} would store "
        "a secret in the deployment"
    )
