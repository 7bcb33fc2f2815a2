"""Spare workspaces: pristine copies made in the background, taken with a rename."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.cache import CodeCache
from conveyor.settings import Settings
from conveyor.sources.store import LocalStoreSource
from conveyor.worker.executors.spares import SparePool, _key
from conveyor.worker.executors.workspace import worker_dir
from fixtures.ports import wait_until


def _versions(settings: Settings, project: Path, count: int) -> list[str]:
    store = LocalStoreSource(settings.storage_dir)
    versions = []
    for i in range(count):
        (project / "data.txt").write_text(f"version {i}")
        versions.append(store.push(project))
    return versions


def test_a_spare_is_a_pristine_writable_copy_taken_once(settings, project, tmp_path) -> None:
    # Given a spare of a version
    cache = CodeCache.from_settings(settings)
    store = LocalStoreSource(settings.storage_dir)
    source = store.to_spec()
    (version,) = _versions(settings, project, 1)
    pool = SparePool(tmp_path / "spares", cache=cache)
    pool.refill(source, version)
    assert wait_until(lambda: bool(pool._ready), timeout=10)
    # When a run takes it
    dest = tmp_path / "run" / "code"
    dest.parent.mkdir()
    taken = pool.take(source, version, dest)
    # Then it holds the checkout's files, writable, and it is gone from the pool
    assert taken
    assert (dest / "data.txt").read_text() == "version 0"
    (dest / "data.txt").write_text("changed by the run")
    assert (cache.path_for(store, version) / "data.txt").read_text() == "version 0"
    assert not pool.take(source, version, tmp_path / "other")
    pool.close()
    assert not (tmp_path / "spares").exists()


def test_only_the_newest_spares_are_kept(settings, project, tmp_path) -> None:
    cache = CodeCache.from_settings(settings)
    store = LocalStoreSource(settings.storage_dir)
    source = store.to_spec()
    versions = _versions(settings, project, 3)
    pool = SparePool(tmp_path / "spares", cache=cache, keep=2)

    for version in versions:
        pool.refill(source, version)
    # (the pool drops the oldest spare's directory just after it stops being pending)
    assert wait_until(
        lambda: not pool._pending and len(list((tmp_path / "spares").iterdir())) == 2, timeout=20
    )

    assert list(pool._ready) == [_key(source, v) for v in versions[1:]]
    pool.close()


def test_a_new_worker_removes_what_dead_workers_left(tmp_path: Path) -> None:
    base = tmp_path / "work"
    dead = base / "w-4194303-abcdef"  # above the default pid_max: no such process
    (dead / "runs" / "r-1-xyz" / "code").mkdir(parents=True)
    mine = worker_dir(base)
    before = time.time()

    other = worker_dir(base)

    assert not dead.exists()
    assert mine.exists()  # this process is alive: its directory stays
    assert other != mine
    assert other.name.startswith(f"w-{os.getpid()}-")
    assert other.stat().st_mtime >= before - 1


def test_a_spare_being_made_is_waited_for(settings, project, tmp_path) -> None:
    cache = CodeCache.from_settings(settings)
    store = LocalStoreSource(settings.storage_dir)
    source = store.to_spec()
    (version,) = _versions(settings, project, 1)
    pool = SparePool(tmp_path / "spares", cache=cache)

    pool.refill(source, version)
    dest = tmp_path / "code"
    taken = pool.take(source, version, dest)  # right away: the copy is (probably) still going

    assert taken
    assert (dest / "data.txt").read_text() == "version 0"
    pool.close()
