"""The code cache in one process: fill, warm path, read-only checkouts, failures, budget, leases."""

from __future__ import annotations

import logging
import os
import stat
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cache_helpers import FakeSource, distinct_size, expected_files, tree_files
from conveyor.cache import CodeCache
from conveyor.errors import CacheError, ConfigError, IntegrityError, SourceUnavailable
from conveyor.settings import Settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def debris(key_dir: Path) -> list[str]:
    """Names in a source directory that are neither bookkeeping of a present version nor scratch."""
    return sorted(n for n in os.listdir(key_dir) if n.startswith((".tmp-", ".trash-")))


def test_cold_ensure_returns_verified_read_only_checkout(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)

    path = cache.ensure(source, "v1")

    assert path == root / source.key() / "v1" == cache.path_for(source, "v1")
    assert tree_files(path) == expected_files("v1", 1000)  # exactly the code, no dotfiles
    assert (source.fetches, source.verifies) == (1, 1)
    modes = {
        p.relative_to(path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in path.rglob("*")
    }
    assert modes == {
        "flow.py": 0o444,
        "data.bin": 0o444,
        "pkg": 0o555,
        "pkg/__init__.py": 0o444,
        "pkg/run.sh": 0o555,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o555
    assert debris(path.parent) == []


def test_warm_ensure_calls_no_source_and_is_fast(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    first = cache.ensure(source, "v1")
    before = cache.entries()[0].last_used

    timings = []
    for _ in range(200):
        start = time.perf_counter()
        again = cache.ensure(source, "v1")
        timings.append(time.perf_counter() - start)

    assert again == first
    assert (source.fetches, source.verifies) == (1, 1)
    assert cache.entries()[0].last_used > before
    assert statistics.median(timings) < 0.005


def test_constructor_does_no_io_and_empty_cache_is_empty(root: Path) -> None:
    cache = CodeCache(root, max_bytes=1)
    assert not root.exists()
    assert cache.entries() == []
    info = cache.info()
    assert (info.root, info.max_bytes, info.used_bytes, info.entry_count) == (root, 1, 0, 0)
    assert cache.prune() == []
    with pytest.raises(ConfigError):
        CodeCache(root, max_bytes=-1)


def test_from_settings_uses_cache_dir_and_budget(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"CONVEYOR_HOME": str(tmp_path), "CONVEYOR_CACHE_MAX_BYTES": "5MB"}
    )
    cache = CodeCache.from_settings(settings)
    assert (cache.root, cache.max_bytes) == (tmp_path / "cache", 5_000_000)


def test_entries_describe_each_checkout(root: Path, state: str) -> None:
    source = FakeSource("app", state=state, size=2000)
    cache = CodeCache(root, max_bytes=10**6)
    path = cache.ensure(source, "v1")

    [entry] = cache.entries()

    assert (entry.source_key, entry.version, entry.path) == (source.key(), "v1", path)
    assert entry.size == sum(len(b) for b in expected_files("v1", 2000).values())
    assert (entry.files, entry.leased, entry.source) == (4, False, source.describe())
    assert (root / source.key() / "v1.meta.json").is_file()


@pytest.mark.parametrize(
    "version", ["", ".hidden", "../escape", "a/b", "v1.lock", "v1.lease", "v1.meta.json", "x" * 300]
)
def test_unsafe_versions_are_refused(root: Path, state: str, version: str) -> None:
    with pytest.raises(CacheError, match="not a version the code cache can store"):
        CodeCache(root, max_bytes=10**6).ensure(FakeSource("app", state=state), version)
    assert not root.exists()


@pytest.mark.parametrize(
    ("flags", "error", "message"),
    [
        ({"fail": True}, SourceUnavailable, "the fake source is down"),
        ({"reject": True}, IntegrityError, "v1 was rejected by the test"),
        ({"corrupt": True}, IntegrityError, "data.bin does not match version v1"),
        ({"os_error": True}, CacheError, "could not fetch v1 at .*: Permission denied"),
    ],
)
def test_failed_fill_leaves_nothing_and_next_ensure_retries(
    root: Path, state: str, flags: dict[str, bool], error: type[Exception], message: str
) -> None:
    cache = CodeCache(root, max_bytes=10**6)
    broken = FakeSource("app", state=state, **flags)

    with pytest.raises(error, match=message):
        cache.ensure(broken, "v1")

    key_dir = root / broken.key()
    assert not (key_dir / "v1").exists()
    assert not (key_dir / "v1.meta.json").exists()
    assert debris(key_dir) == []
    assert cache.entries() == []

    working = FakeSource("app", state=state)
    assert working.key() == broken.key()
    path = cache.ensure(working, "v1")
    assert tree_files(path) == expected_files("v1", 1000)
    assert working.fetches == 2


def test_stale_fill_left_by_dead_process_is_removed(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    key_dir = root / source.key()
    stale = key_dir / ".tmp-v1-0123abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "half.py").write_text("x = ")
    for p in (stale / "sub" / "half.py", stale / "sub", stale):
        p.chmod(0o555)
    other = key_dir / ".tmp-v2-89abcdef"
    other.mkdir()
    trash = key_dir / ".trash-v0-00000000"
    trash.mkdir()

    cache.ensure(source, "v1")

    assert debris(key_dir) == []
    assert tree_files(key_dir / "v1") == expected_files("v1", 1000)


def test_scratch_dir_is_a_persistent_entry_counted_and_evicted(root: Path, state: str) -> None:
    # Given a source that keeps 3000 bytes of state in its scratch directory per fetch
    source = FakeSource("app", state=state, scratch=True, scratch_bytes=3000)
    size = sum(len(b) for b in expected_files("v1", 1000).values())
    cache = CodeCache(root, max_bytes=10**6)
    cache.ensure(source, "v1")
    cache.ensure(source, "v2")

    # Then the scratch directory is kept between fetches, and is an entry of its own
    scratch = root / source.key() / ".scratch"
    assert sorted(os.listdir(scratch)) == ["state-v1", "state-v2"]
    assert (Path(state) / "fetches.log").read_text().split()[-1] == str(scratch)
    entries = cache.entries()
    assert [(e.kind, e.version) for e in entries] == [
        ("checkout", "v1"),
        ("scratch", ""),
        ("checkout", "v2"),
    ]
    [kept] = [e for e in entries if e.kind == "scratch"]
    assert (kept.path, kept.size, kept.files, kept.leased) == (scratch, 6000, 2, False)
    assert kept.source == source.describe()
    info = cache.info()
    assert (info.used_bytes, info.entry_count, info.scratch_count, info.scratch_bytes) == (
        distinct_size("v1", "v2") + 6000,  # the files v1 and v2 share are stored once
        3,
        1,
        6000,
    )
    assert cache.scratch_dir(FakeSource("other", state=state)) != scratch

    # When the cache is pruned to one checkout: least recently used first, scratch included
    evicted = cache.prune(max_bytes=size)

    # Then v1 and the scratch directory are gone, with their bookkeeping; the next fill makes a
    # new scratch directory
    assert [(e.kind, e.version, e.size, e.freed) for e in evicted] == [
        ("checkout", "v1", size, distinct_size("v1", "v2") - size),  # not what v2 still holds
        ("scratch", "", 6000, 6000),
    ]
    assert not scratch.exists()
    assert not (root / source.key() / ".scratch.meta.json").exists()
    assert debris(root / source.key()) == []
    cache.ensure(source, "v3")
    assert sorted(os.listdir(scratch)) == ["state-v3"]


def test_budget_evicts_least_recently_used_first(root: Path, state: str) -> None:
    # Given three 1 kB versions and a budget that holds two
    source = FakeSource("app", state=state, size=1000)
    size = sum(len(b) for b in expected_files("v1", 1000).values())
    cache = CodeCache(root, max_bytes=2 * size + size // 2)
    cache.ensure(source, "v1")
    cache.ensure(source, "v2")
    cache.ensure(source, "v1")  # warm: v1 is now more recent than v2
    assert [e.version for e in cache.entries()] == ["v2", "v1"]

    # When a third version is filled
    cache.ensure(source, "v3")

    # Then the least recently used one (v2) is gone, with its bookkeeping, and the rest fit
    entries = cache.entries()
    assert [e.version for e in entries] == ["v1", "v3"]
    assert entries[0].last_used < entries[1].last_used
    key_dir = root / source.key()
    assert not (key_dir / "v2").exists()
    assert not (key_dir / "v2.meta.json").exists()
    assert not (key_dir / "v2.lease").exists()
    assert debris(key_dir) == []
    assert cache.info().used_bytes == distinct_size("v1", "v3") <= cache.max_bytes

    # And an explicit prune evicts in LRU order and reports what it removed
    evicted = cache.prune(max_bytes=size)
    assert [e.version for e in evicted] == ["v1"]
    assert cache.prune(max_bytes=0)[0].version == "v3"
    assert cache.entries() == []
    assert source.fetches == 3


def test_version_larger_than_budget_is_still_returned(
    root: Path, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CodeCache(root, max_bytes=100)
    with caplog.at_level(logging.WARNING, logger="conveyor.cache"):
        path = cache.ensure(FakeSource("app", state=state, size=5000), "big")
    assert tree_files(path) == expected_files("big", 5000)
    assert "version larger than cache budget version=big" in caplog.text
    assert cache.info().entry_count == 1


def test_leased_version_is_never_evicted(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    cache.ensure(source, "v2")

    with cache.lease(source, "v1") as path:
        assert tree_files(path) == expected_files("v1", 1000)
        evicted = cache.prune(max_bytes=0)
        assert [e.version for e in evicted] == ["v2"]
        assert path.is_dir()
        [entry] = cache.entries()
        assert (entry.version, entry.leased) == ("v1", True)
        assert cache.info().leased_count == 1

    assert cache.entries()[0].leased is False
    assert [e.version for e in cache.prune(max_bytes=0)] == ["v1"]
    assert source.fetches == 2


def test_lease_refills_a_version_evicted_before_it(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    cache.ensure(source, "v1")
    cache.prune(max_bytes=0)

    with cache.lease(source, "v1") as path:
        assert tree_files(path) == expected_files("v1", 1000)
    assert source.fetches == 2


def test_missing_metadata_is_rebuilt(root: Path, state: str) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    path = cache.ensure(source, "v1")
    (root / source.key() / "v1.meta.json").unlink()

    assert cache.entries()[0].size == sum(len(b) for b in expected_files("v1", 1000).values())
    assert cache.ensure(source, "v1") == path
    assert source.fetches == 1
    assert (root / source.key() / "v1.meta.json").is_file()


def test_unwritable_cache_root_is_a_cache_error(tmp_path: Path, state: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = CodeCache(blocker / "cache", max_bytes=10**6)
    with pytest.raises(CacheError, match="cannot create cache directory") as info:
        cache.ensure(FakeSource("app", state=state), "v1")
    assert "CONVEYOR_CACHE_DIR" in (info.value.hint or "")


def test_orphaned_bookkeeping_is_swept_but_not_that_of_present_versions(
    root: Path, state: str
) -> None:
    source = FakeSource("app", state=state)
    cache = CodeCache(root, max_bytes=10**6)
    cache.ensure(source, "v1")
    with cache.lease(source, "v1"):
        pass
    key_dir = root / source.key()
    (key_dir / "gone.meta.json").write_text("{}")
    (key_dir / "gone.lease").touch()

    cache.prune()

    # (lock files stay: unlinking a lock file others may wait on would split them across inodes)
    left = sorted(os.listdir(key_dir))
    assert left == [
        ".index",
        "gone.lock",
        "v1",
        "v1.lease",
        "v1.lock",
        "v1.meta.json",
    ]


def test_racing_threads_fetch_once(root: Path, state: str) -> None:
    source = FakeSource("app", state=state, delay=0.2)
    cache = CodeCache(root, max_bytes=10**6)
    barrier = threading.Barrier(6)

    def run() -> Path:
        barrier.wait(timeout=10)
        return cache.ensure(source, "v1")

    with ThreadPoolExecutor(max_workers=6) as pool:
        paths = list(pool.map(lambda _: run(), range(6)))

    assert set(paths) == {root / source.key() / "v1"}
    assert source.fetches == 1
