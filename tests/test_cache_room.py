# ruff: noqa: F401, F811  (fixtures imported from fixtures.* are parameters here)
"""Making room and running out of it: eviction before a fill, scratch directories in use, and a
full disk reported as the cache's own error (on a real size-limited file system where it counts).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cache_helpers import FakeSource, expected_files, helper_command, tree_files
from conveyor.cache import CodeCache
from conveyor.errors import CacheError
from conveyor.sources.store import BundleStore
from fixtures.ports import wait_until
from fixtures.small_disk import SmallDisk, small_disk

MiB = 1024 * 1024


def size_of(version: str, size: int = 1000) -> int:
    return sum(len(b) for b in expected_files(version, size).values())


def present_at_fetch(state: str, version: str) -> list[str]:
    """The checkouts that were in the cache when ``version``'s fetch started."""
    for line in (Path(state) / "present.log").read_text().splitlines():
        name, _, present = line.partition(" ")
        if name == version:
            return present.split(",") if present else []
    raise AssertionError(f"{version} was never fetched")


def test_a_fill_first_evicts_down_to_the_budget(tmp_path: Path) -> None:
    # Given three versions in a cache whose budget was then lowered to two
    state = str(tmp_path / "state")
    source = FakeSource("app", state=state)
    for version in ("v1", "v2", "v3"):
        CodeCache(tmp_path / "cache", max_bytes=10**6).ensure(source, version)
    cache = CodeCache(tmp_path / "cache", max_bytes=2 * size_of("v1") + 100)
    assert [e.version for e in cache.entries()] == ["v1", "v2", "v3"]

    # When a fourth version is filled
    cache.ensure(source, "v4")

    # Then the least recently used version was gone before its fetch started, not only after
    assert present_at_fetch(state, "v4") == ["v2", "v3"]
    assert [e.version for e in cache.entries()] == ["v3", "v4"]


def test_a_fill_makes_room_for_the_size_the_source_expects(tmp_path: Path) -> None:
    # Given a cache holding two small versions within its budget of 10 kB
    state = str(tmp_path / "state")
    cache = CodeCache(tmp_path / "cache", max_bytes=10_000)
    small = FakeSource("app", state=state)
    cache.ensure(small, "v1")
    cache.ensure(small, "v2")

    # When a version the source says takes 9.5 kB is filled
    big = FakeSource("app", state=state, size=9_500, expected=size_of("v3", 9_500))
    cache.ensure(big, "v3")

    # Then both small versions were evicted before the fetch, and the budget holds
    assert present_at_fetch(state, "v3") == []
    assert [e.version for e in cache.entries()] == ["v3"]
    assert cache.info().used_bytes <= 10_000


def test_full_disk_reported_by_a_source_is_a_cache_error_naming_the_cache(
    tmp_path: Path,
) -> None:
    # Given a source whose unpacking runs out of disk (reported as its own error, "from None")
    root = tmp_path / "cache"
    cache = CodeCache(root, max_bytes=123_456)
    source = FakeSource("app", state=str(tmp_path / "state"), no_space=True)

    # When it is filled
    with pytest.raises(CacheError) as caught:
        cache.ensure(source, "v1")

    # Then the error names the cache, the path and the cause, in one line, with what to do
    message = str(caught.value)
    assert message.startswith(f"the code cache at {root} is out of space: could not fetch v1 at ")
    assert str(root / source.key() / "v1") in message
    assert "No space left on device" in message
    assert "\n" not in message
    assert caught.value.hint is not None
    assert "CONVEYOR_CACHE_MAX_BYTES (now 123456 bytes)" in caught.value.hint
    assert "conveyor cache prune" in caught.value.hint
    assert [n for n in os.listdir(root / source.key()) if n.startswith(".tmp-")] == []
    assert cache.entries() == []


def test_a_scratch_directory_is_never_evicted_while_a_fill_holds_it(tmp_path: Path) -> None:
    # Given a scratch directory with state, and another process blocked in a fill that uses it
    root, state = tmp_path / "cache", tmp_path / "state"
    cache = CodeCache(root, max_bytes=10**6)
    source = FakeSource("app", state=str(state), scratch=True, scratch_bytes=500)
    cache.ensure(source, "v1")
    blocked = FakeSource("app", state=str(state), scratch=True, scratch_bytes=500, block=True)
    proc = subprocess.Popen(
        helper_command("ensure", root, blocked, "v2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: any(state.glob("started-*")), timeout=30)

        # When the cache is pruned to nothing
        evicted = cache.prune(max_bytes=0)

        # Then the checkout went, the scratch directory in use stayed (and shows as in use)
        assert [(e.kind, e.version) for e in evicted] == [("checkout", "v1")]
        [held] = cache.entries()
        assert (held.kind, held.leased) == ("scratch", True)
        assert (root / source.key() / ".scratch" / "state-v1").is_file()

        # And once the fill is done, it can go
        (state / "release").touch()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert [e.kind for e in cache.prune(max_bytes=size_of("v2"))] == ["scratch"]
    assert not (root / source.key() / ".scratch").exists()
    assert [e.version for e in cache.entries()] == ["v2"]


# -- on a real 20 MiB file system -----------------------------------------------------------------


def test_cache_writes_that_fill_the_disk_leave_nothing_and_name_the_cache(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    # Given a cache on a 20 MiB disk whose budget (1 GiB) is larger than the disk
    root = small_disk.path / "cache"
    cache = CodeCache(root, max_bytes=1024**3)
    free_before = small_disk.free

    # When a 30 MiB version is filled
    huge = FakeSource("app", state=str(tmp_path / "state"), size=30 * MiB)
    with pytest.raises(CacheError) as caught:
        cache.ensure(huge, "v1")

    # Then the kernel's ENOSPC is the cache's own error, naming it, and nothing is left behind
    message = str(caught.value)
    assert message.startswith(f"the code cache at {root} is out of space: could not fetch v1")
    assert "No space left on device" in message
    assert "conveyor cache prune" in (caught.value.hint or "")
    assert cache.entries() == []
    assert small_disk.free >= free_before - 64 * 1024
    # and a version that fits is filled right after
    path = cache.ensure(FakeSource("app", state=str(tmp_path / "state")), "v2")
    assert tree_files(path) == expected_files("v2", 1000)


def test_a_fill_evicts_for_the_space_it_needs_on_a_small_disk(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    # Given a 20 MiB disk holding three 5 MiB versions, and a budget far above the disk's size
    state = str(tmp_path / "state")
    cache = CodeCache(small_disk.path / "cache", max_bytes=1024**3)
    five = FakeSource("app", state=state, size=5 * MiB)
    for version in ("v1", "v2", "v3"):
        cache.ensure(five, version)
    assert small_disk.free < 8 * MiB

    # When an 8 MiB version whose size the source knows is filled
    eight = FakeSource("app", state=state, size=8 * MiB, expected=size_of("v4", 8 * MiB))
    path = cache.ensure(eight, "v4")

    # Then the least recently used version made way before the fetch, and the fill succeeded
    assert present_at_fetch(state, "v4") == ["v2", "v3"]
    assert tree_files(path) == expected_files("v4", 8 * MiB)
    assert [e.version for e in cache.entries()] == ["v2", "v3", "v4"]


def test_a_bundle_unpack_that_fills_the_disk_is_the_cache_error_too(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    # Given a stored bundle of 24 MiB (incompressible) and a cache on a 20 MiB disk
    project = tmp_path / "project"
    project.mkdir()
    (project / "flow.py").write_text("WORD = 'big'\n")
    (project / "data.bin").write_bytes(os.urandom(24 * MiB))
    store = BundleStore(tmp_path / "store")
    version = store.push(project)
    root = small_disk.path / "cache"
    cache = CodeCache(root, max_bytes=1024**3)
    free_before = small_disk.free

    # When it is filled, the unpacker's own "cannot write" error is caused by ENOSPC
    with pytest.raises(CacheError) as caught:
        cache.ensure(store, version)

    # Then it is reported as the cache's full disk, and nothing is left behind
    message = str(caught.value)
    assert message.startswith(f"the code cache at {root} is out of space: could not fetch")
    assert "No space left on device" in message
    assert cache.entries() == []
    assert small_disk.free >= free_before - 64 * 1024
