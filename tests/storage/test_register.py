"""Registration: ``secrets=`` names resolved on the worker (environment first, then the store)
and never stored; environments and run configs as job variables; ``conveyor register`` and
``conveyor agent start -l LABEL`` on the real command line."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.run_configs import DockerRun, KubernetesRun, LocalRun, UniversalRun
from conveyor.schemas import RunState
from conveyor.settings import Settings
from storage.conftest import run_and_wait, run_logs, write_script

SECRET_VALUE = "sekret-value-9f31"


def define(code: str, **values: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "flow_definitions", **values}
    exec(code, namespace)
    return namespace


def test_storage_secrets_are_resolved_on_the_worker_and_only_their_names_are_stored(
    tmp_path: Path, settings: Settings, client: ConveyorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a flow whose storage names a secret, registered, the value only in the store
    namespace = define(
        """
from conveyor import Flow, task
from conveyor.storage import Local

@task
def fingerprint() -> str:
    import hashlib, os
    return hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest()

with Flow("uses-secret", storage=Local(directory=DIR, secrets=["API_TOKEN"])) as flow:
    fingerprint()
""",
        DIR=str(tmp_path / "flows"),
    )
    client.set_secret("API_TOKEN", SECRET_VALUE)
    deployment = namespace["flow"].register(settings=settings, client=client)
    assert deployment.job_variables["env"] == {"API_TOKEN": "${API_TOKEN}"}

    # When a worker runs it: the store's value reached the flow
    run = run_and_wait(settings, client, "uses-secret")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"fingerprint": hashlib.sha256(SECRET_VALUE.encode()).hexdigest()}
    # ...and the value is nowhere in the database (the store keeps it encrypted) or the logs
    for db in settings.home.glob("conveyor.db*"):
        assert SECRET_VALUE.encode() not in db.read_bytes()
    assert SECRET_VALUE not in run_logs(client, run.id)

    # When the worker's environment has the name, the environment wins
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    again = run_and_wait(settings, client, "uses-secret")
    assert again.result == {"fingerprint": hashlib.sha256(b"from-the-environment").hexdigest()}

    # When neither has it, the run fails before the flow starts, naming the template
    monkeypatch.delenv("API_TOKEN")
    client.delete_secret("API_TOKEN")
    missing = run_and_wait(settings, client, "uses-secret")
    assert missing.state == RunState.FAILED
    assert "template ${API_TOKEN} has no value" in (missing.error or "")


def test_environment_image_and_run_config_become_the_deployments_job_variables(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor.environments import LocalEnvironment

    namespace = define(
        """
from conveyor import Flow, task
from conveyor.storage import Local

@task
def one() -> int:
    return 1

with Flow("example") as flow:
    one()

flow.storage = Local(directory=DIR, labels=["flow-storage"])
""",
        DIR=str(tmp_path / "flows"),
    )
    graph_flow = namespace["flow"]
    graph_flow.environment = LocalEnvironment(metadata={"image": "repo/name:tag"})
    graph_flow.run_config = UniversalRun(env={"MODE": "test"}, labels=["gpu"])
    deployment = graph_flow.register(labels=["cli"], settings=settings, client=client)
    assert deployment.job_variables == {
        "image": "repo/name:tag",
        "env": {"MODE": "test"},
        "labels": sorted({"cli", "flow-storage", "gpu", socket.gethostname()}),
    }
    assert deployment.name == "default"
    renamed = graph_flow.register(project_name="etl", settings=settings, client=client)
    assert (renamed.flow_name, renamed.name) == ("example", "etl")
    # A process pool runs it (the image is for container pools); the labels pick the worker
    run = run_and_wait(settings, client, "example", "etl", labels=["cli", "flow-storage", "gpu"])
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)


def test_run_configs_map_to_job_variables() -> None:
    assert DockerRun(image="img:1", env={"A": "1"}, labels=["x"]).job_variables() == {
        "image": "img:1",
        "env": {"A": "1"},
        "labels": ["x"],
    }
    assert KubernetesRun(image="img:2", cpu_request="500m").job_variables() == {
        "image": "img:2",
        "cpu_request": "500m",
    }
    assert UniversalRun().job_variables() == {}
    with pytest.raises(ConfigError, match="working_dir"):
        LocalRun(working_dir="/srv")


@pytest.mark.slow
def test_conveyor_register_and_an_agent_with_the_label(tmp_path: Path) -> None:
    from e2e.conftest import api, command_env, conveyor, ok

    env = command_env()
    project = tmp_path / "project"
    write_script(
        project / "flows.py",
        """
        from conveyor import Flow, task

        @task
        def shout(text: str) -> str:
            return text.upper()

        with Flow("cli-flow") as flow:
            shout("from the cli")

        flow.register()  # skipped: conveyor register is loading this file
        """,
    )
    out = ok(
        conveyor(
            "register", "--path", "flows.py", "-l", "blue", "--project", "etl", env=env, cwd=project
        )
    )
    assert out.startswith("registered cli-flow/etl version sha256-")
    with api(env) as client:
        deployment = client.get_deployment("cli-flow", "etl")
        assert deployment.entrypoint == "flows.py:flow"  # the script itself (Local, script mode)
        assert deployment.job_variables["labels"] == sorted({"blue", socket.gethostname()})
        assert [d.name for d in client.list_deployments()] == ["etl"]
        run = client.create_run("cli-flow", "etl")
        # An agent without the label claims nothing
        ok(conveyor("agent", "start", "--burst", env=env, timeout=60))
        assert client.get_run(run.id).state == RunState.SCHEDULED
        # An agent with it runs it
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "agent", "local", "start", "-l", "blue", "--burst"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        finished = client.get_run(run.id)
        assert finished.state == RunState.COMPLETED, done.stderr
        assert finished.result == {"shout": "FROM THE CLI"}


def test_a_decorated_flow_with_storage_registers_pickled_and_takes_parameters(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    namespace = define(
        """
from conveyor import flow
from conveyor.storage import Local

@flow(storage=Local(directory=DIR), retries=1)
def greet(name: str = "world", times: int = 1) -> str:
    return " ".join(["hello " + name] * times)
""",
        DIR=str(tmp_path / "flows"),
    )
    greet = namespace["greet"]
    assert "greet" in greet.storage
    deployment = greet.register(settings=settings, client=client)
    assert (deployment.entrypoint, deployment.retries) == ("flow.pickle", 1)
    assert set(deployment.parameter_schema["properties"]) == {"name", "times"}
    created = client.create_run("greet", "default", parameters={"name": "ada", "times": 2})
    from storage.conftest import run_worker

    run_worker(settings, client)
    run = client.get_run(created.id)
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == "hello ada hello ada"


def test_module_storage_imports_the_installed_module_where_the_flow_runs(
    tmp_path: Path, settings: Settings, client: ConveyorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a module importable here and on the worker (on PYTHONPATH, as if installed)
    site = tmp_path / "site"
    write_script(
        site / "installed_flows.py",
        """
        from conveyor import Flow, task

        @task
        def version() -> str:
            return "installed 1.0"

        with Flow("from-module") as pipeline:
            version()
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    from conveyor.storage import Module

    storage = Module("installed_flows")
    flow = __import__("installed_flows").pipeline
    flow.storage = storage
    assert storage.get_flow("from-module", settings=settings, client=client) is flow
    deployment = flow.register(settings=settings, client=client)
    assert deployment.entrypoint == "installed_flows:pipeline"
    assert deployment.source == {"kind": "module", "module": "installed_flows"}
    run = run_and_wait(settings, client, "from-module")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"version": "installed 1.0"}


@pytest.mark.slow
def test_conveyor_register_a_folder_registers_its_scripts_and_names_a_missing_flow(
    tmp_path: Path,
) -> None:
    from e2e.conftest import api, command_env, conveyor, ok, one_line_error

    # Given a folder of flow scripts, as `prefect register -p flows/` takes it
    env = command_env()
    folder = tmp_path / "project" / "flows"
    for name in ("extract", "load"):
        write_script(
            folder / f"{name}.py",
            f"""
            from conveyor import Flow, task

            @task
            def say(text: str) -> str:
                return text

            with Flow("{name}") as flow:
                say("{name}")
            """,
        )
    (folder / "notes.txt").write_text("not a script")

    # When the folder is registered, and then a flow name it does not define is asked for
    out = ok(conveyor("register", "-p", "flows", "-l", "etl", env=env, cwd=folder.parent))
    missing = conveyor(
        "register", "-p", "flows", "-n", "load", "-n", "transform", env=env, cwd=folder.parent
    )

    # Then each of its scripts' flows is a deployment; the unknown name is an error that says
    # which flows there are (not a silent partial registration)
    assert [line.split(" version ")[0] for line in out.splitlines()] == [
        "registered extract/default",
        "registered load/default",
    ]
    with api(env) as client:
        assert sorted(d.flow_name for d in client.list_deployments()) == ["extract", "load"]
    assert one_line_error(missing) == (
        "no flow named 'transform' in the scripts and modules given (they define: extract, load)"
    )


def test_prefect_register_keywords_are_taken_or_refused_by_name_not_as_storage_options(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a flow with its storage, registered as Prefect 1 code calls register()
    namespace = define(
        """
from conveyor import Flow, task
from conveyor.storage import Local

@task
def one() -> int:
    return 1

with Flow("prefect-kw", storage=Local(directory=DIR)) as flow:
    one()
""",
        DIR=str(tmp_path / "flows"),
    )
    flow = namespace["flow"]

    # When it passes the keywords that have nothing to do here, twice
    first = flow.register(
        set_schedule_active=False,
        no_url=True,
        idempotency_key="abc",
        settings=settings,
        client=client,
    )
    again = flow.register(idempotency_key="abc", settings=settings, client=client)

    # Then it is registered once (unchanged: no new revision), and version_group_id, which has
    # no equivalent, is refused by its own name (not as an option of the default storage)
    assert (first.flow_name, first.name, first.revision) == ("prefect-kw", "default", 1)
    assert again.revision == 1
    with pytest.raises(ConfigError) as caught:
        flow.register(version_group_id="vg-1", settings=settings, client=client)
    assert str(caught.value) == (
        "register() version_group_id is not supported: a deployment is FLOW/PROJECT"
    )
