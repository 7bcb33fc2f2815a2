"""SIGKILL in the middle of the object store's work leaves nothing trusted that is wrong.

A real process fills a version, evicts, or holds a workspace (an overlay mount, hard links),
and is killed with SIGKILL in the middle (`objects_helpers.py` says which phase it reached and
is slowed down there). Afterwards, every stored object still holds the bytes its name says,
every checkout a use is handed checks out as its version, the next prune leaves no debris and
no object that nothing links, and a new worker takes a dead one's mounts down.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.sources.store import LocalStoreSource
from conveyor.worker.executors.mounts import can_mount, mounts_under, unmount_under
from conveyor.worker.executors.workspace import worker_dir
from fixtures.ports import wait_until

HELPER = Path(__file__).resolve().parent / "objects_helpers.py"


def _tree(root: Path, salt: str, count: int = 120) -> Path:
    for i in range(count):
        path = root / f"pkg{i % 6}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        # most files are the same in every version; every 10th is the version's own
        own = salt if i % 10 == 0 else ""
        path.write_bytes(f"X = {i}  # {own}\n".encode() * 40)
    return root


@pytest.fixture
def world(tmp_path: Path) -> tuple[CodeCache, LocalStoreSource, list[str]]:
    """A cache, a bundle store and two versions that share 90% of their files."""
    store = LocalStoreSource(tmp_path / "storage")
    versions = [store.push(_tree(tmp_path / f"tree-{s}", s)) for s in ("a", "b")]
    return CodeCache(tmp_path / "cache", max_bytes=10**12), store, versions


def _helper(mode: str, cache: CodeCache, store: LocalStoreSource, version: str, *rest: str):  # type: ignore[no-untyped-def]
    markers = cache.root.parent / f"markers-{mode}-{time.monotonic_ns()}"
    markers.mkdir()
    storage = cache.root.parent / "storage"
    argv = [sys.executable, str(HELPER), mode, str(cache.root), str(storage), version]
    proc = subprocess.Popen([*argv, str(markers), *rest], stderr=subprocess.PIPE, text=True)
    return proc, markers


def _kill_at(proc: subprocess.Popen[str], marker: Path, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after it reached ``marker``; False if it ended first."""
    reached = wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=60)
    assert reached, "the helper never reached its phase"
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read() if proc.stderr else ""
    return alive


def assert_nothing_wrong_is_trusted(
    cache: CodeCache, store: LocalStoreSource, versions: list[str]
) -> None:
    # every stored object holds its name's bytes, sealed
    objects = [p for shard in (cache.root / ".objects").glob("??") for p in shard.iterdir()]
    for path in objects:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name[:64], path
        assert stat.S_IMODE(path.lstat().st_mode) in (0o444, 0o555)
    # every version a use is handed is exactly that version
    for version in versions:
        with cache.checkout(store, version) as path:
            assert compute_version(path) == version
    # and a prune leaves no debris, nor an object nothing links
    cache.prune()
    key_dir = cache.root / store.key()
    assert [n for n in os.listdir(key_dir) if n.startswith((".tmp-", ".trash-"))] == []
    for shard in (cache.root / ".objects").glob("??"):
        for path in shard.iterdir():
            assert path.lstat().st_nlink > 1, f"{path} is linked by nothing"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "delay"),
    [("unpacking", 0.05), ("storing", 0.1), ("recording", 0.1), ("renaming", 0.1)],
)
def test_sigkill_mid_fill(
    phase: str, delay: float, world: tuple[CodeCache, LocalStoreSource, list[str]]
) -> None:
    # Given one version cached, and a process filling the other (which shares most files)
    cache, store, versions = world
    cache.ensure(store, versions[0])
    proc, markers = _helper("fill", cache, store, versions[1])
    # When it is killed while unpacking, storing the files it wrote, before their stamps are
    # recorded, or just before the checkout would be renamed into place
    killed = _kill_at(proc, markers / phase, delay)
    # Then nothing it left is trusted wrongly, and the version can be filled and used
    assert killed, "the fill ended before it could be killed"
    assert not cache.path_for(store, versions[1]).exists()
    assert_nothing_wrong_is_trusted(cache, store, versions)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "delay"), [("removing", 0.05), ("removing", 0.3), ("collecting", 0.0)]
)
def test_sigkill_mid_eviction(
    phase: str, delay: float, world: tuple[CodeCache, LocalStoreSource, list[str]]
) -> None:
    # Given two cached versions sharing most files
    cache, store, versions = world
    for version in versions:
        cache.ensure(store, version)
    # When a process evicting them is killed while it removes files, or objects
    proc, markers = _helper("evict", cache, store, versions[0])
    killed = _kill_at(proc, markers / phase, delay)
    # Then the versions left and the objects are sound, and both versions can be used again
    assert killed, "the eviction ended before it could be killed"
    assert_nothing_wrong_is_trusted(cache, store, versions)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mount", "links"])
def test_a_killed_workers_workspace_is_taken_down_by_the_next_worker(
    mode: str, world: tuple[CodeCache, LocalStoreSource, list[str]], tmp_path: Path
) -> None:
    cache, store, versions = world
    base = tmp_path / "work"
    base.mkdir()
    if mode == "mount" and not can_mount(base):
        from conftest import service_unavailable

        service_unavailable("this process cannot mount an overlay (not root?)")
    # Given a worker process holding a workspace of a version, killed with SIGKILL
    proc, markers = _helper(mode, cache, store, versions[0], str(base))
    try:
        _kill_at(proc, markers / "ready", 0.0)
        left = [p for p in base.iterdir() if p.name.startswith("w-")]
        assert len(left) == 1
        assert bool(mounts_under(left[0])) is (mode == "mount")
        # When the next worker starts
        worker_dir(base)
        # Then the dead worker's mount and files are gone, and the cache is sound
        assert not left[0].exists()
        assert mounts_under(base) == []
        assert_nothing_wrong_is_trusted(cache, store, versions)
    finally:
        unmount_under(base)
