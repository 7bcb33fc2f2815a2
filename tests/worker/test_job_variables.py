"""Job variables Prefect users set on process pools (issue 9, item 5): ``working_dir``,
``command`` and ``stream_output`` applied by the process executor, bad values refused in one
line, and pool defaults merged under a deployment's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor._jobvars import (
    PROCESS_JOB_VARIABLES,
    child_command,
    merge_job_variables,
    process_options,
    schema_defaults,
)
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import ConfigError
from conveyor.schemas import Run, RunState
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions

FLOW = """
import logging, os, pathlib, sys
from conveyor import flow

@flow
def where() -> dict:
    import helper
    print("printed line")
    logging.getLogger("flows").info("logged line")
    pathlib.Path("written.txt").write_text("here")
    return {
        "cwd": os.getcwd(),
        "helper": helper.VALUE,
        "wrapped": os.environ.get("CONVEYOR_WRAPPED"),
        "python": sys.executable,
    }
"""


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    (root / "data").mkdir(parents=True)
    (root / "flows.py").write_text(FLOW)
    (root / "helper.py").write_text("VALUE = 'imported from the code'\n")
    (root / "data" / "input.csv").write_text("a,b\n")
    return root


def run_with(
    settings: Settings, client: ConveyorClient, code: Path, job_variables: dict[str, Any]
) -> Run:
    deployment = from_source(code, "flows.py:where").deploy(
        "jv", settings=settings, client=client, job_variables=job_variables
    )
    created = client.create_run(deployment.flow_name, deployment.name)
    options = WorkerOptions(name="w1", poll_seconds=0.2)
    Worker.from_settings(settings, client, options).work(burst=True)
    return client.get_run(created.id)


def test_a_relative_working_dir_is_inside_the_code_and_imports_still_work(
    settings: Settings, client: ConveyorClient, code: Path
) -> None:
    done = run_with(settings, client, code, {"working_dir": "data"})
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["cwd"].endswith("/code/data")
    assert done.result["helper"] == "imported from the code"


def test_an_absolute_working_dir_is_where_the_flow_writes(
    settings: Settings, client: ConveyorClient, code: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "scratch"
    outside.mkdir()
    done = run_with(settings, client, code, {"working_dir": str(outside)})
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["cwd"] == str(outside)
    assert (outside / "written.txt").read_text() == "here"
    assert done.result["helper"] == "imported from the code"


@pytest.mark.parametrize(
    "command",
    [
        "env CONVEYOR_WRAPPED=yes python -m conveyor.worker.child",
        ["env", "CONVEYOR_WRAPPED=yes", "python3", "-m", "prefect.engine"],
    ],
    ids=["ours", "prefect-default"],
)
def test_a_command_wraps_the_flow_process(
    settings: Settings, client: ConveyorClient, code: Path, command: Any
) -> None:
    import sys

    done = run_with(settings, client, code, {"command": command})
    assert done.state is RunState.COMPLETED, done.error
    assert done.result["wrapped"] == "yes"
    assert done.result["python"] == sys.executable  # `python` is the run's interpreter


@pytest.mark.parametrize("stream", [True, False])
def test_stream_output_decides_whether_prints_reach_the_run_logs(
    settings: Settings, client: ConveyorClient, code: Path, stream: bool
) -> None:
    done = run_with(settings, client, code, {"stream_output": stream})
    assert done.state is RunState.COMPLETED, done.error
    lines = [line.message for line in client.read_logs(done.id)]
    assert "logged line" in lines
    assert ("printed line" in lines) is stream


@pytest.mark.parametrize(
    ("job_variables", "error"),
    [
        ({"working_dir": 5}, "job variable working_dir: 5 is not of type 'string', 'null'"),
        ({"stream_output": "no"}, "job variable stream_output: 'no' is not of type 'boolean'"),
    ],
)
def test_job_variables_of_the_wrong_type_are_refused_at_deploy(
    settings: Settings,
    client: ConveyorClient,
    code: Path,
    job_variables: dict[str, Any],
    error: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_source(code, "flows.py:where").deploy(
            "jv", settings=settings, client=client, job_variables=job_variables
        )
    assert caught.value.message == error
    assert client.list_deployments() == []


@pytest.mark.parametrize(
    ("job_variables", "error"),
    [
        ({"command": "echo hi"}, "job variable command 'echo hi' does not start the flow"),
        (
            {"working_dir": "../.."},
            "job variable working_dir: ../.. leaves the run's code directory",
        ),
        (
            {"working_dir": "/no/such/dir"},
            "job variable working_dir: /no/such/dir is not a directory on this worker",
        ),
    ],
)
def test_job_variables_the_worker_cannot_use_fail_the_run_in_one_line(
    settings: Settings,
    client: ConveyorClient,
    code: Path,
    job_variables: dict[str, Any],
    error: str,
) -> None:
    done = run_with(settings, client, code, job_variables)
    assert done.state is RunState.FAILED
    assert done.error == error
    assert done.running_at is None


def test_a_wrong_type_from_a_pool_default_fails_the_run_in_one_line(
    settings: Settings, client: ConveyorClient, code: Path
) -> None:
    # A pool whose template's default no longer fits the process schema (edited after deploy)
    variables = {
        "type": "object",
        "properties": {"stream_output": {"type": ["string", "boolean"], "default": "no"}},
    }
    client.create_pool("loose", base_job_template={"job_configuration": {}, "variables": variables})
    deployment = from_source(code, "flows.py:where").deploy(
        "jv", settings=settings, client=client, work_pool="loose"
    )
    created = client.create_run(deployment.flow_name, deployment.name)
    assert created.job_variables == {"stream_output": "no"}
    options = WorkerOptions(name="w1", poll_seconds=0.2, pool="loose")
    Worker.from_settings(settings, client, options).work(burst=True)
    done = client.get_run(created.id)
    assert done.state is RunState.FAILED
    assert done.error == "job variable stream_output: 'no' is not of type 'boolean'"


def test_pool_defaults_sit_under_the_deployment_with_env_merged_by_key() -> None:
    defaults = schema_defaults(PROCESS_JOB_VARIABLES)
    assert defaults["stream_output"] is True
    defaults["env"] = {"EXTRA_PIP_PACKAGES": "prefect-aws", "REGION": "eu"}
    merged = merge_job_variables(defaults, {"env": {"REGION": "us"}, "working_dir": "/srv"})
    assert merged["env"] == {"EXTRA_PIP_PACKAGES": "prefect-aws", "REGION": "us"}
    assert merged["working_dir"] == "/srv"
    assert merged["stream_output"] is True
    assert defaults["env"] == {"EXTRA_PIP_PACKAGES": "prefect-aws", "REGION": "eu"}  # unchanged
    options = process_options(merged)
    assert options.extra_pip_packages is None  # top-level unset: the env one is read per run
    assert options.working_dir == "/srv"


def test_the_child_command_keeps_wrappers_and_swaps_the_interpreter(tmp_path: Path) -> None:
    control = tmp_path / "control"
    assert child_command((), python="/env/bin/python", control=control) == [
        "/env/bin/python",
        "-m",
        "conveyor.worker.child",
        str(control),
    ]
    assert child_command(
        ("nice", "-n", "5", "/usr/bin/python3", "-m", "prefect.engine"),
        python="/env/bin/python",
        control=control,
    ) == ["nice", "-n", "5", "/env/bin/python", "-m", "conveyor.worker.child", str(control)]
    assert child_command(("-m", "conveyor.worker.child"), python="/p", control=control) == [
        "/p",
        "-m",
        "conveyor.worker.child",
        str(control),
    ]
    with pytest.raises(ConfigError, match="does not start the flow"):
        process_options({"command": ["python", "flows.py"]})
