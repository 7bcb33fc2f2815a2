"""What a flow returns or prints that the server could not store as it is: the run still
completes, the result is kept by reference, the text is cleaned, and the run list still works."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.run_results import load_result
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions

FLOWS = textwrap.dedent(
    """
    from conveyor import flow


    @flow
    def surrogate() -> str:
        return "half \\ud83d of a pair"


    @flow
    def deep() -> dict:
        value = 1
        for _ in range(70):
            value = {"a": value}
        return value


    @flow
    def nul() -> str:
        print("a\\x00b")
        return "a\\x00b"
    """
)


@pytest.mark.parametrize("function", ["surrogate", "deep", "nul"])
def test_an_unstorable_result_is_kept_by_reference(settings: Settings, tmp_path: Path, function):
    # Given a flow whose result JSON could carry but the server could not store or render
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOWS)
    with connect(settings) as client:
        deployment = from_source(project, f"flows.py:{function}").deploy(
            "test", settings=settings, client=client
        )
        run = client.create_run(deployment.flow_name, deployment.name)

        # When a worker runs it
        worker = Worker.from_settings(
            settings, client, WorkerOptions(name="w1", lease_seconds=5.0, poll_seconds=0.2)
        )
        assert worker.work(burst=True) == 0

        # Then the run completed with its result by reference, and it lists and reads back
        done = client.get_run(run.id)
        listed = client.list_runs()
        messages = [line.message for line in client.read_logs(run.id)]
    assert done.state is RunState.COMPLETED, done.error
    assert (done.result, done.result_ref) == (None, f"local:{run.id}/result.pickle")
    expected = {
        "surrogate": "half \ud83d of a pair",
        "nul": "a\x00b",
    }.get(function)
    result = load_result(done, settings=settings)
    if expected is not None:
        assert result == expected
    else:
        depth = 0
        while isinstance(result, dict):
            result, depth = result["a"], depth + 1
        assert (result, depth) == (1, 70)
    if function == "nul":
        assert "a\ufffdb" in messages  # printed output is cleaned, not refused
    assert [r.id for r in listed] == [run.id]
