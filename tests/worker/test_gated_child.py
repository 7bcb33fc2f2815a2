"""A run's child started before its code is ready (`GatedChild`): it runs the flow exactly as a
child started afterwards would (working directory, ``sys.path``, ``PYTHONPATH``, stdin), it
loads nothing of the run before the worker opens its gate — not even when the cached code turns
out to be tampered with — and a child given up is gone when the run is."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.errors import SourceNotFound
from conveyor.schemas import RunState
from conveyor.worker.executors import Interrupt, Outcome, RunSpec
from conveyor.worker.executors.local import ProcessExecutor
from conveyor.worker.logs import RunLogs
from worker.conftest import LogSink

FLOWS = """
import os, pathlib, sys
from conveyor import flow

pathlib.Path(os.environ["MARKERS"], f"imported-{os.getpid()}").write_text(pathlib.Path(
    __file__).read_text()[:20])


@flow
def where() -> dict:
    return {
        "argv": sys.argv[1:-1],
        "cwd": os.getcwd(),
        "path": sys.path[:2],
        "pythonpath": os.environ["PYTHONPATH"].split(os.pathsep)[0],
        "stdin": sys.stdin.read(),
        "sibling": __import__("helpers").VALUE,
    }


class Cycle:
    def __init__(self, marker: str) -> None:
        self.marker, self.me = marker, self

    def __del__(self) -> None:
        pathlib.Path(self.marker).write_text("finalized")


@flow
def cycles() -> dict:
    import gc

    gc.disable()  # only the collection at exit can find the cycle
    Cycle(os.path.join(os.environ["MARKERS"], f"cycle-{os.getpid()}"))
    return {"frozen": gc.get_freeze_count()}
"""


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "flows.py").write_text(FLOWS.lstrip())
    (root / "helpers.py").write_text("VALUE = 'sibling'\n")
    return root


@pytest.fixture
def run(tmp_path: Path, project: Path, markers: Path) -> Iterator[Any]:
    stack = ExitStack()
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    executor = ProcessExecutor(cache=cache, work_dir=tmp_path / "work", spares=False)

    def one(
        version: str,
        pull_steps: tuple[dict[str, Any], ...] = (),
        entrypoint: str = "flows.py:where",
    ) -> Outcome:
        spec = RunSpec(
            run_id="run-1",
            entrypoint=entrypoint,
            source={"kind": "local", "path": str(project)},
            version=version,
            pull_steps=pull_steps,
            env={"MARKERS": str(markers)},
        )
        logs = RunLogs(LogSink(), spec.run_id).start()
        try:
            return stack.enter_context(
                executor.run(spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True)
            )
        finally:
            logs.close()

    yield one
    stack.close()


def _children(work: Path) -> list[str]:
    """Command lines of live processes started for a run under ``work``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in argv]
        if state != "Z" and any(a.startswith(str(work)) for a in text):
            found.append(" ".join(text))
    return found


def test_a_child_started_early_runs_the_flow_as_one_started_late_would(
    run: Any, project: Path
) -> None:
    # Given a version with no pull steps (the child starts before the code) and one whose pull
    # step runs a command first (the child starts once the code is ready)
    version = compute_version(project)
    early = run(version)
    late = run(version, ({"run_shell_script": {"script": f"{sys.executable} -c pass"}},))
    # Then both completed, only the first through the gate, and the flow saw the same world
    assert (early.state, late.state) == (RunState.COMPLETED, RunState.COMPLETED), (
        early.error,
        late.error,
    )
    assert early.result["argv"] == ["--gate"]
    assert late.result["argv"] == []
    for outcome in (early, late):
        code = outcome.result["cwd"]
        assert Path(code).name == "code"
        assert outcome.result["path"] == [code, code]
        assert outcome.result["pythonpath"] == code
        assert outcome.result["stdin"] == ""
        assert outcome.result["sibling"] == "sibling"


def test_a_child_waiting_at_its_gate_never_loads_tampered_code_and_is_gone_with_the_run(
    run: Any, project: Path, markers: Path, tmp_path: Path
) -> None:
    # Given a version run once (so it is cached), whose cached flow file is then rewritten and
    # whose source is gone (nothing to fetch it again from)
    version = compute_version(project)
    assert run(version).state is RunState.COMPLETED
    for marker in markers.iterdir():
        marker.unlink()
    (cached,) = (tmp_path / "cache").glob(f"*/{version}/flows.py")
    os.chmod(cached.parent, 0o755)
    os.chmod(cached, 0o644)
    cached.write_text("TAMPERED = True\n" + FLOWS.lstrip())
    os.rename(project, tmp_path / "moved")
    # When it runs again
    with pytest.raises(SourceNotFound):  # the tampering was found: it went to fetch it again
        run(version)
    # Then the run failed before its child imported anything of the run, and no child is left
    assert list(markers.iterdir()) == []
    assert _children(tmp_path / "work") == []


def test_conveyor_is_out_of_the_collectors_way_and_the_flows_garbage_is_still_finalized(
    run: Any, project: Path, markers: Path
) -> None:
    # Given a flow that leaves a reference cycle with a finalizer behind, the collector off
    version = compute_version(project)
    early = run(version, entrypoint="flows.py:cycles")
    late = run(
        version,
        ({"run_shell_script": {"script": f"{sys.executable} -c pass"}},),
        entrypoint="flows.py:cycles",
    )
    assert (early.state, late.state) == (RunState.COMPLETED, RunState.COMPLETED), (
        early.error,
        late.error,
    )
    # Then both children had Conveyor's own objects frozen before the flow
    assert early.result["frozen"] > 1000
    assert late.result["frozen"] > 1000
    # And in both children the interpreter's last collection still finalized the flow's cycle
    finalized = sorted(p.read_text() for p in markers.glob("cycle-*"))
    assert finalized == ["finalized", "finalized"]
