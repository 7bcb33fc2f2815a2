"""Workspaces that copy nothing: overlay mounts, hard links with --run-as, and the copy fallback.

In every mode, a flow that rewrites, appends to, truncates, chmods, deletes or replaces shipped
files in its working directory leaves the cache and every other run's view intact, and the next
run of the same version sees the pristine files. Mounts are gone when the run ends (the test
teardown takes any that a failure left down).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.worker.executors import Interrupt, RunSpec
from conveyor.worker.executors.isolation import RunAs, work_base
from conveyor.worker.executors.local import ProcessExecutor
from conveyor.worker.executors.mounts import can_mount, mounts_under, unmount_under
from conveyor.worker.executors.workspace import worker_dir
from conveyor.worker.logs import RunLogs
from fixtures.ports import wait_until
from fixtures.users import interpreter_for, shared_dir, throwaway_user  # noqa: F401
from worker.conftest import LogSink
from worker.shipped_files import PROJECT


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for rel, data in PROJECT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "tool.sh").chmod(0o755)
    return root


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every user can traverse (workspaces, markers); no mount outlives the test."""
    with shared_dir("conveyor-modes-") as path:
        try:
            yield path
        finally:
            unmount_under(path)
            assert mounts_under(path) == [], "a workspace mount outlived its run"


def _digests(root: Path) -> dict[str, str]:
    found = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(top, name)
            found[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _run(executor: ProcessExecutor, spec: RunSpec) -> Any:
    logs = RunLogs(LogSink(), spec.run_id).start()
    with executor.run(spec, logs=logs, interrupt=Interrupt(), started=lambda _t: True) as out:
        logs.close()
        assert out.state is not None
        assert out.state.value == "completed", out.error
        return out.result


CASES = [
    pytest.param("overlay", False, id="overlay"),
    pytest.param("overlay", True, id="overlay-run-as"),
    pytest.param("links", True, id="links-run-as"),
    pytest.param("copy", False, id="copy"),
    pytest.param("copy", True, id="copy-run-as"),
]


@pytest.mark.parametrize(("mode", "as_user"), CASES)
def test_a_flow_changing_shipped_files_leaves_the_cache_and_other_runs_intact(
    mode: str,
    as_user: bool,
    request: pytest.FixtureRequest,
    project: Path,
    base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker making workspaces in one mode (as root, or with --run-as)
    if mode == "overlay" and not can_mount(base):
        from conftest import service_unavailable

        service_unavailable("this process cannot mount an overlay (not root?)")
    run_as = None
    python = None
    if as_user:
        user = request.getfixturevalue("throwaway_user")
        argv, extra = interpreter_for(user)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        run_as, python = RunAs.lookup(user), argv[0]
    work = worker_dir(work_base(base / "work"), shared=True) if run_as else worker_dir(base)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    executor = ProcessExecutor(
        cache=cache, work_dir=work, run_as=run_as, workspace=mode, grace_seconds=1.0
    )
    if python is not None:
        executor.python = python
    assert executor.workspace_mode() == mode
    version = compute_version(project)
    source = {"kind": "local", "path": str(project)}

    def spec(run_id: str, function: str, **parameters: Any) -> RunSpec:
        return RunSpec(
            run_id=run_id,
            entrypoint=f"flows.py:{function}",
            source=source,
            version=version,
            parameters=parameters,
        )

    markers = base / "markers"
    markers.mkdir(mode=0o777)
    os.chmod(markers, 0o777)
    try:
        # ...and another run of the version, started first, holding its working directory
        held: dict[str, Any] = {}
        holder = threading.Thread(
            target=lambda: held.update(
                result=_run(
                    executor,
                    spec(
                        "run-hold",
                        "hold",
                        marker=str(markers / "go"),
                        started=str(markers / "holding"),
                    ),
                )
            )
        )
        holder.start()
        assert wait_until((markers / "holding").exists, timeout=30)

        # When a flow rewrites, appends to, truncates, chmods, deletes and replaces shipped files
        done = _run(executor, spec("run-mutate", "mutate"))
        (markers / "go").touch()
        holder.join(60)

        # Then it could do what its user may (all of it as root or in its own copy; with
        # --run-as, files it shares with the cache are not its own to change in place, but it
        # may delete and replace them)
        refused = {"Permission denied", "Operation not permitted"}
        in_place = {"ok"} if run_as is None or mode == "copy" else refused
        for name in ("rewrite", "append", "truncate", "chmod"):
            assert done[name] in in_place, done
        assert (done["delete"], done["replace"], done["create"]) == ("ok", "ok", "ok")
        # ...the cache's checkout is untouched (checked, not fetched again), so is the run that
        # held the same version meanwhile, and the next run sees the pristine files
        with cache.checkout(source, version) as checkout:
            pristine = _digests(checkout)
        assert pristine["data.txt"] == hashlib.sha256(PROJECT["data.txt"]).hexdigest()
        assert {k: v for k, v in pristine.items() if not k.startswith(".conveyor/")} == {
            rel: hashlib.sha256(data).hexdigest() for rel, data in PROJECT.items()
        }
        assert held["result"] == pristine
        assert _run(executor, spec("run-look", "look")) == pristine
        assert os.access(checkout / "tool.sh", os.X_OK)
        assert not (checkout / "pkg/made.txt").exists()
        # ...and no workspace (nor its mount) is left
        assert mounts_under(work) == []
        assert list((work / "runs").iterdir()) == []
    finally:
        (markers / "go").touch()
        executor.close()
