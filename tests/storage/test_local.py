"""`Local` storage: the storage document's snippet, run as a script, registers and runs on a
worker with an empty cache; the host-name label keeps other machines' workers away; script mode;
a stored file changed after registration is refused."""

from __future__ import annotations

import pickle
import shutil
import socket
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from storage.conftest import python, run_and_wait, run_logs, run_worker, write_script

SEED_LOCAL = """
from conveyor import Flow
from conveyor.storage import Local

flow = Flow("local-flow", storage=Local())

flow.storage.build()
"""

AFTER_SEED = """
# --- the test's additions after the snippet: a task, then registration
from conveyor import task

@task
def shout(text: str) -> str:
    return text.upper()

with flow:
    shout("hello")

print("STORED", flow.storage.flows["local-flow"])
deployment = flow.register(labels=["seed"])
print("DEPLOYED", deployment.flow_name, deployment.name, deployment.version)
"""


def test_seed_snippet_builds_under_the_home_registers_and_runs_with_its_results_there(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given the document's Local snippet, verbatim, then a task and flow.register()
    script = write_script(tmp_path / "project" / "local_flow.py", SEED_LOCAL + AFTER_SEED)
    out = python(script)
    stored = Path(out.split("STORED ", 1)[1].split()[0])
    flow_name, name, version = out.split("DEPLOYED ", 1)[1].split()[:3]
    # Then build() stored the flow under ~/.conveyor/flows/local-flow/<utc timestamp>
    flows_dir = settings.home / "flows" / "local-flow"
    assert stored.parent == flows_dir
    assert stored.is_file()
    assert stored.name[:4].isdigit()
    assert stored.name.endswith("-00-00")
    # ...and the deployment local-flow/default pins the stored file's digest, labelled with host
    deployment = client.get_deployment("local-flow", "default")
    assert (flow_name, name, deployment.version) == ("local-flow", "default", version)
    assert deployment.source["kind"] == "flow-file"
    assert deployment.source["signed"] is True
    assert deployment.entrypoint == "flow.pickle"
    assert deployment.job_variables["labels"] == sorted({socket.gethostname(), "seed"})
    shutil.rmtree(settings.cache_dir)  # registration's preflight cached it: the agent starts empty

    # When an agent with the label runs it (its cache empty)
    run = run_and_wait(settings, client, "local-flow", labels=["seed"])

    # Then it ran the registered flow, and the task's result is under ~/.conveyor/results
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"shout": "HELLO"}
    assert run.version == version
    assert "fetch" in run.timings
    assert any(settings.cache_dir.rglob("flow.pickle"))  # fetched from the storage into the cache
    written = sorted((settings.home / "results" / "local-flow").glob("shout-*.result"))
    assert written, run_logs(client, run.id)
    assert pickle.loads(written[-1].read_bytes()) == "HELLO"
    assert str(written[-1]) in run_logs(client, run.id)


def test_a_worker_without_the_host_label_never_claims_a_local_flow(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    script = write_script(
        tmp_path / "p" / "flows.py",
        """
        from conveyor import Flow, task
        from conveyor.storage import Local

        @task
        def one() -> int:
            return 1

        with Flow("pinned-here", storage=Local()) as flow:
            one()

        flow.register()
        """,
    )
    python(script)
    run = client.create_run("pinned-here", "default")
    # A worker on another machine (another host name, whatever labels it has) claims nothing
    elsewhere = run_worker(settings, client, labels=["other-host", "seed"], replace_labels=True)
    assert elsewhere.started == 0
    assert client.get_run(run.id).state == RunState.SCHEDULED
    # A worker on this machine claims and runs it
    here = run_worker(settings, client)
    assert here.started == 1
    assert client.get_run(run.id).state == RunState.COMPLETED


def test_add_default_labels_false_leaves_the_host_label_out(settings: Settings) -> None:
    from conveyor import Flow
    from conveyor.storage import Local

    assert Local().labels == [socket.gethostname()]
    assert Local(add_default_labels=False, labels=["b", "a", "b"]).labels == ["a", "b"]
    flow = Flow("unlabelled", storage=Local(add_default_labels=False))
    from conveyor.storage._register import job_variables_for

    assert "labels" not in job_variables_for(flow, flow.storage)


def test_script_mode_stores_the_file_pins_it_and_refuses_it_once_changed(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a flow stored as its script (Local(path=..., stored_as_script=True)), registered
    script = write_script(
        tmp_path / "scripts" / "etl.py",
        """
        from conveyor import Flow, task
        from conveyor.storage import Local

        @task
        def load() -> list[int]:
            return [1, 2, 3]

        @task
        def total(xs: list[int]) -> int:
            return sum(xs)

        with Flow("script-etl", storage=Local(path=__file__, stored_as_script=True)) as flow:
            total(load())

        if __name__ == "__main__":
            flow.register()
        """,
    )
    python(script)
    deployment = client.get_deployment("script-etl", "default")
    assert deployment.entrypoint == "etl.py:flow"
    assert deployment.source == {
        "kind": "flow-file",
        "location": {"path": str(script)},
        "filename": "etl.py",
    }
    # When it runs: the script itself was loaded (its flow.register() skipped while loading)
    run = run_and_wait(settings, client, "script-etl")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"load": [1, 2, 3], "total": 6}
    # When the script changes after registration, a worker that cached it runs what was
    # registered; one with an empty cache refuses the changed file
    script.write_text(script.read_text().replace("[1, 2, 3]", "[4]"))
    warm = run_and_wait(settings, client, "script-etl")
    assert warm.state == RunState.COMPLETED
    assert warm.result == {"load": [1, 2, 3], "total": 6}
    shutil.rmtree(settings.cache_dir)
    cold = run_and_wait(settings, client, "script-etl")
    assert cold.state == RunState.FAILED
    assert "changed since it was registered" in (cold.error or "")


def test_get_flow_returns_a_runnable_flow_and_names_what_is_missing(
    tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Local

    @task
    def double(x: int) -> int:
        return 2 * x

    with Flow("in-process", storage=Local(directory=tmp_path / "flows")) as flow:
        double(21)
    flow.storage.build(settings=settings, client=client)
    location = Path(flow.storage.flows["in-process"])
    assert location.parent.parent == tmp_path / "flows"

    loaded = flow.storage.get_flow("in-process", settings=settings, client=client)
    assert loaded is not flow
    assert loaded.run().result == {"double": 42}
    with pytest.raises(ConfigError, match="'nope' is not contained in this Local storage") as e:
        flow.storage.get_flow("nope", settings=settings, client=client)
    assert e.value.hint
    assert "add it first" in e.value.hint
    assert "in-process" in flow.storage
    assert flow not in flow.storage


def test_script_mode_without_a_path_is_refused_as_the_reference_says() -> None:
    from conveyor import Flow
    from conveyor.storage import Local

    with pytest.raises(ConfigError, match="A `path` must be provided"):
        Flow("no-path", storage=Local(stored_as_script=True))
