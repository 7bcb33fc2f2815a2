"""Pull steps are run by the worker, in order, with outputs passed between them; a worker refuses
a pool whose type it has no executor for."""

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
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions

FLOW = """
import os, pathlib
from conveyor import flow

@flow
def report() -> dict:
    return {
        "cwd": os.getcwd(),
        "prepared": pathlib.Path("prepared.txt").read_text(),
        "sibling": __import__("local_helper").VALUE,
    }
"""


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A project whose flow lives in ``app/`` and imports a sibling of that directory."""
    root = tmp_path / "nested"
    (root / "app").mkdir(parents=True)
    (root / "app" / "flows.py").write_text(FLOW)
    (root / "app" / "local_helper.py").write_text("VALUE = 'from app/'\n")
    return root


def worker(settings: Settings, client: ConveyorClient, **options: Any) -> Worker:
    return Worker.from_settings(
        settings, client, WorkerOptions(name="w1", poll_seconds=0.2, **options)
    )


def test_pull_steps_run_in_order_with_outputs_and_set_the_working_directory(
    settings: Settings, client: ConveyorClient, nested: Path
) -> None:
    # Given a deployment whose pull steps move into app/, run a command there (an output of its
    # own), and feed that output to a second command that prepares a file for the flow
    python = sys.executable
    steps = [
        {"set_working_directory": {"id": "cd", "directory": "app"}},
        {"run_shell_script": {"id": "probe", "script": f"{python} -c \"print('probed')\""}},
        {
            "run_shell_script": {
                "script": f"{python} -c \"import sys; open('prepared.txt','w')"
                f".write(sys.argv[1] + ' in ' + sys.argv[2])\" "
                "'{{ probe.stdout }}' '{{ cd.directory }}'",
            }
        },
    ]
    deployment = from_source(nested, "flows.py:report").deploy(
        "steps", settings=settings, client=client, pull_steps=steps
    )
    run = client.create_run(deployment.flow_name, deployment.name)

    # When a worker runs it
    worker(settings, client).work(burst=True)

    # Then the steps ran in the run's workspace, in order, the second one saw the first one's
    # output, and the flow ran in (and imported from) the directory the steps set
    done = client.get_run(run.id)
    assert done.state is RunState.COMPLETED, done.error
    result = done.result
    assert result["cwd"].endswith("/code/app")
    assert result["prepared"] == f"probed in {result['cwd']}"
    assert result["sibling"] == "from app/"
    logs = [line.message for line in client.read_logs(run.id)]
    assert "probed" in logs  # run_shell_script streams its output to the run's logs
    assert "steps" in done.timings or "fetch" in done.timings


def test_a_failing_step_fails_the_run_before_the_flow_starts(
    settings: Settings, client: ConveyorClient, nested: Path
) -> None:
    steps = [{"run_shell_script": {"script": f"{sys.executable} -c 'raise SystemExit(7)'"}}]
    deployment = from_source(nested, "app/flows.py:report").deploy(
        "failing", settings=settings, client=client, pull_steps=steps
    )
    run = client.create_run(deployment.flow_name, deployment.name)
    worker(settings, client).work(burst=True)
    done = client.get_run(run.id)
    assert done.state is RunState.FAILED
    assert done.error is not None
    assert "exited with 7" in done.error
    assert done.running_at is None  # the flow never started


def test_a_step_the_worker_could_not_run_is_refused_at_deploy(
    settings: Settings, client: ConveyorClient, nested: Path
) -> None:
    with pytest.raises(ConfigError, match="unknown step 'no_such_step'"):
        from_source(nested, "app/flows.py:report").deploy(
            "bad", settings=settings, client=client, pull_steps=[{"no_such_step": {}}]
        )
    with pytest.raises(ConfigError, match="unexpected keyword argument 'bogus'"):
        from_source(nested, "app/flows.py:report").deploy(
            "bad",
            settings=settings,
            client=client,
            pull_steps=[{"set_working_directory": {"directory": "app", "bogus": 1}}],
        )
    assert client.list_deployments() == []


@pytest.mark.parametrize("pool_type", ["dask"])
def test_a_worker_refuses_a_pool_of_a_type_it_cannot_run(
    settings: Settings, client: ConveyorClient, pool_type: str
) -> None:
    client.create_pool(f"{pool_type}-pool", type=pool_type)
    with pytest.raises(ConfigError) as caught:
        worker(settings, client, pool=f"{pool_type}-pool")
    assert str(caught.value) == (
        f"work pool '{pool_type}-pool' is of type '{pool_type}', which this worker cannot run"
    )
    assert caught.value.hint == "this worker runs pools of type: docker, kubernetes, process"
