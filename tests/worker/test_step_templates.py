"""Templates in the text arguments of the built-in pull steps: ``{{ $ENV }}`` and
``{{ step_id.key }}`` are substituted on the worker; a secret bound for ``run_shell_script``'s
command line is refused at deploy (secrets go through ``env``, masked); ``set_working_directory``
with a template the worker resolves deploys, and is checked on the worker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import ConfigError
from conveyor.schemas import Deployment, Run, RunState
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions

PY = sys.executable

FLOW = """
import os, pathlib
from conveyor import flow

@flow
def report() -> dict:
    prepared = pathlib.Path("prepared.txt")
    return {"cwd": os.getcwd(), "prepared": prepared.read_text() if prepared.exists() else None}
"""

TOKEN = "tok-Q7c2-w9Zk"


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A project whose flow is in ``app/`` (and, for steps that stay at the root, also there)."""
    root = tmp_path / "nested"
    (root / "app").mkdir(parents=True)
    (root / "app" / "flows.py").write_text(FLOW)
    (root / "flows.py").write_text(FLOW)
    return root


def deploy(
    settings: Settings, client: ConveyorClient, project: Path, steps: list[dict[str, Any]]
) -> Deployment:
    return from_source(project, "flows.py:report").deploy(
        "templated", settings=settings, client=client, pull_steps=steps
    )


def run_once(settings: Settings, client: ConveyorClient, deployment: Deployment) -> Run:
    run = client.create_run(deployment.flow_name, deployment.name)
    options = WorkerOptions(name="w1", poll_seconds=0.2)
    Worker.from_settings(settings, client, options).work(burst=True)
    return client.get_run(run.id)


def logs_of(client: ConveyorClient, run: Run) -> list[str]:
    return [line.message for line in client.read_logs(run.id)]


def test_env_and_output_templates_in_a_script_are_substituted_on_the_worker(
    settings: Settings, client: ConveyorClient, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment whose first step echoes a value of the worker's environment, and whose
    # second writes that step's output and the environment value again into a file
    steps = [
        {"run_shell_script": {"id": "s1", "script": "echo home is {{ $STEP_PLACE }}"}},
        {
            "run_shell_script": {
                "script": f"{PY} -c \"import sys; open('prepared.txt', 'w').write(sys.argv[1])\" "
                "'{{ s1.stdout }} / {{ $STEP_PLACE }}'",
            }
        },
    ]
    monkeypatch.delenv("STEP_PLACE", raising=False)
    deployment = deploy(settings, client, nested, steps)  # nothing is resolved at deploy

    # When a worker whose environment sets the variable runs it
    monkeypatch.setenv("STEP_PLACE", "the worker")
    done = run_once(settings, client, deployment)

    # Then both steps saw the substituted values, and the flow the file they wrote
    assert done.state is RunState.COMPLETED, done.error
    assert "home is the worker" in logs_of(client, done)
    assert done.result["prepared"] == "home is the worker / the worker"


@pytest.mark.parametrize(
    "template", ["${MYSECRET}", "{{ secrets.MYSECRET }}", "{{ prefect.blocks.secret.MYSECRET }}"]
)
def test_a_secret_in_a_script_is_refused_at_deploy_and_nothing_is_stored(
    settings: Settings, client: ConveyorClient, nested: Path, template: str
) -> None:
    steps = [{"run_shell_script": {"id": "s1", "script": f"echo {template}"}}]
    with pytest.raises(ConfigError) as caught:
        deploy(settings, client, nested, steps)
    assert str(caught.value) == (
        f"step run_shell_script (id s1): the secret {template} cannot go into script, where it "
        "would be in a command line; pass it through the step's env instead "
        f'(env: {{TOKEN: "{template}"}}) and have the command read $TOKEN'
    )
    assert "\n" not in str(caught.value)
    assert client.list_deployments() == []


def test_a_secret_through_the_steps_env_reaches_the_command_masked(
    settings: Settings, client: ConveyorClient, nested: Path
) -> None:
    client.set_secret("MYSECRET", TOKEN)
    steps = [
        {
            "run_shell_script": {
                "script": "sh -c 'echo token is $TOKEN'",
                "env": {"TOKEN": "{{ secrets.MYSECRET }}"},
            }
        }
    ]
    done = run_once(settings, client, deploy(settings, client, nested, steps))
    assert done.state is RunState.COMPLETED, done.error
    lines = logs_of(client, done)
    assert "token is ****" in lines
    assert TOKEN not in "\n".join(lines)


def test_a_working_directory_from_the_environment_deploys_and_the_flow_runs_there(
    settings: Settings, client: ConveyorClient, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a working directory from the environment (set where the deploy runs too, so the
    # flow is loaded from there), and a step that writes a file in it
    monkeypatch.setenv("SUBDIR", "app")
    steps = [
        {"set_working_directory": {"directory": "{{ $SUBDIR }}"}},
        {"run_shell_script": {"script": f"{PY} -c \"open('prepared.txt', 'w').write('here')\""}},
    ]
    deployment = deploy(settings, client, nested, steps)
    assert deployment.pull_steps[0]["set_working_directory"]["directory"] == "{{ $SUBDIR }}"

    # When a worker runs it, Then the step and the flow ran in app/
    done = run_once(settings, client, deployment)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["cwd"].endswith("/code/app")
    assert done.result["prepared"] == "here"


def test_a_working_directory_the_deploy_cannot_resolve_is_left_to_the_worker(
    settings: Settings, client: ConveyorClient, nested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUBDIR", raising=False)
    steps = [{"set_working_directory": {"directory": "{{ $SUBDIR }}"}}]
    deployment = deploy(settings, client, nested, steps)  # preflighted from the root
    monkeypatch.setenv("SUBDIR", "app")
    done = run_once(settings, client, deployment)
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["cwd"].endswith("/code/app")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("../..", "is outside the run's code directory"),
        ("nowhere", "is not a directory of the run's code"),
    ],
)
def test_a_working_directory_the_worker_resolves_is_checked_there(
    settings: Settings,
    client: ConveyorClient,
    nested: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    error: str,
) -> None:
    # Given a deployment made where SUBDIR names a directory of the code
    monkeypatch.setenv("SUBDIR", "app")
    deployment = deploy(
        settings, client, nested, [{"set_working_directory": {"directory": "{{ $SUBDIR }}"}}]
    )
    # When the worker's SUBDIR points outside the code, or nowhere
    monkeypatch.setenv("SUBDIR", value)
    done = run_once(settings, client, deployment)
    # Then the run fails before the flow, in one line naming the variable (its value is
    # masked, as every value substituted into a step's arguments)
    assert done.state is RunState.FAILED
    message = f"set_working_directory: **** (from SUBDIR) {error}"
    assert done.error == message
    assert done.running_at is None
    assert f"run failed before the flow started: {message}" in logs_of(client, done)
