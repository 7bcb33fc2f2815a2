"""The code cache across real processes: single-flight, SIGKILL mid-fetch, foreign leases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from cache_helpers import FakeSource, expected_files, helper_command, tree_digest, tree_files
from conveyor.cache import CodeCache
from fixtures.ports import wait_until

RACERS = 8


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
def test_racing_processes_fetch_once(tmp_path: Path) -> None:
    # Given 8 processes that start ensuring the same version at the same moment (a file barrier)
    root, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    source = FakeSource("app", state=str(tmp_path / "state"), delay=0.3)
    procs = [
        subprocess.Popen(
            helper_command(
                "ensure", root, source, "v1", str(barrier / f"ready-{i}"), str(barrier / "go")
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(RACERS)
    ]
    try:
        assert wait_until(lambda: len(os.listdir(barrier)) == RACERS, timeout=30)
        (barrier / "go").touch()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            _stop(proc)

    # Then exactly one of them fetched, and all got the same complete checkout
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    assert source.fetches == 1
    assert source.verifies == 1
    path = root / source.key() / "v1"
    assert {r["path"] for r in results} == {str(path)}
    assert {r["digest"] for r in results} == {tree_digest(path)}
    assert tree_files(path) == expected_files("v1", 1000)
    assert len({r["pid"] for r in results}) == RACERS
    assert sorted(n for n in os.listdir(path.parent) if n.startswith(".tmp-")) == []


@pytest.mark.slow
def test_sigkill_mid_fetch_is_recovered(tmp_path: Path) -> None:
    # Given a process killed while its fetch is half-written
    root, state = tmp_path / "cache", tmp_path / "state"
    blocking = FakeSource("app", state=str(state), block=True)
    key_dir = root / blocking.key()
    proc = subprocess.Popen(
        helper_command("ensure", root, blocking, "v1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = state / f"started-{proc.pid}"
        assert wait_until(started.exists, timeout=30), proc.stderr
        tmp_dir = Path(started.read_text())
        assert tmp_dir.parent == key_dir
        assert tmp_dir.name.startswith(".tmp-v1-")

        # While it is alive, filling another version of the same source leaves its fill alone
        cache = CodeCache(root, max_bytes=10**6)
        working = FakeSource("app", state=str(state))
        cache.ensure(working, "v2")
        assert tmp_dir.is_dir()

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert tmp_dir.is_dir()
    assert not (key_dir / "v1").exists()

    # When the next process ensures the version
    path = cache.ensure(working, "v1")

    # Then it fetched again, the half-made directory is gone and the checkout is complete
    assert working.fetches == 3
    assert not tmp_dir.exists()
    assert tree_files(path) == expected_files("v1", 1000)
    assert sorted(n for n in os.listdir(key_dir) if n.startswith((".tmp-", ".trash-"))) == []
    assert {e.version for e in cache.entries()} == {"v1", "v2"}


@pytest.mark.slow
def test_lease_of_another_process_blocks_eviction_until_it_dies(tmp_path: Path) -> None:
    # Given another live process holding a lease on v1, and an unleased v2
    root = tmp_path / "cache"
    source = FakeSource("app", state=str(tmp_path / "state"))
    cache = CodeCache(root, max_bytes=10**6)
    ready = tmp_path / "leased"
    proc = subprocess.Popen(
        helper_command("lease", root, source, "v1", str(ready)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(ready.exists, timeout=30), proc.stderr
        leased_path = Path(ready.read_text())
        cache.ensure(source, "v2")

        # When the cache is pruned to nothing
        evicted = cache.prune(max_bytes=0)

        # Then only the unleased version goes; the leased one is reported as leased
        assert [e.version for e in evicted] == ["v2"]
        [entry] = cache.entries()
        assert (entry.version, entry.path, entry.leased) == ("v1", leased_path, True)
        assert tree_files(leased_path) == expected_files("v1", 1000)

        # And once the leasing process is killed, its lease dies with it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        _stop(proc)
    assert cache.entries()[0].leased is False
    assert [e.version for e in cache.prune(max_bytes=0)] == ["v1"]
    assert not leased_path.exists()
    assert cache.entries() == []
